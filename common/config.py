"""Cluster and model spec: one TOML file, every key documented in `defaults.toml`.

`load_spec` reads a user's spec over the defaults and rejects unknown keys by name, so a typo
is an error and not a silently ignored setting. The running cluster is described by the same
dataclasses plus node addresses, serialized as JSON in the cluster file.
"""
from __future__ import annotations

import copy
import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.cpus import MAX_SLICE_MS, MIN_SLICE_MS, parse_cpu_list
from common.errors import ConfigError, find_model
from common.features import FeatureSpec, Transform
from common.security import SecuritySpec

DEFAULTS_PATH = Path(__file__).with_name("defaults.toml")
# the sparse optimizers of common.optim (kept here so loading a spec does not import numba;
# tests/unit/test_optim.py checks the two agree)
OPTIMIZERS = ("ftrl", "adagrad", "sgd", "lazy_adam")
# model kinds, and the activations of a deep model's hidden layers (common.deep; kept here so
# loading a spec imports neither numba nor TensorFlow)
KINDS = ("linear", "deep")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu")
DEEP_BITS = 18  # a deep model's default bits: each slot holds hidden[0] weights and moments
MAX_DEEP_WIDTH = 4096


@dataclass
class OptimizerSpec:
    name: str = "ftrl"
    learning_rate: float = 0.1
    beta: float = 1.0
    l1: float = 0.0
    l2: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8


@dataclass
class ModelSpec:
    name: str
    bits: int = 22
    fields: list[str] = field(default_factory=list)
    crosses: list[list[str]] = field(default_factory=list)
    transforms: list[str] = field(default_factory=list)
    bias: bool = True
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    kind: str = "linear"  # "linear" | "deep" (common.deep)
    hidden: list[int] = field(default_factory=lambda: [64, 32])  # deep: layer widths
    activation: str = "relu"  # deep: the hidden layers' activation

    @property
    def slots(self) -> int:
        return 1 << self.bits


@dataclass
class ClusterSpec:
    """The whole cluster as one value: node counts, addresses, durability, serving settings
    and models. Every node and command reads the same spec, so they agree on the layout."""

    shards: int = 2
    replicas: int = 1
    host: str = "127.0.0.1"
    base_port: int = 0
    publish_window_ms: float = 5
    heartbeat_ms: float = 250
    publish_hwm: int = 10000
    max_message_bytes: int = 256 << 20
    data_dir: str = ".deltaps"
    fsync: str = "interval"
    fsync_interval_ms: float = 50
    snapshot_interval_s: float = 300
    snapshots_kept: int = 2
    wal_segment_mb: int = 64
    http_base_port: int = 0  # replica r serves HTTP on http_base_port + r; 0: free ports
    metrics_base_port: int = 0  # /metrics: shard k on base + k, replica r on base + shards + r
    shard_hosts: str = ""  # host of shard k with "{index}" for k (one host per shard); "": none
    prediction_cache_ttl_ms: float = 0.0  # replicas cache repeated predictions; 0: off
    prediction_cache_entries: int = 10000
    worker_nice: int = 10  # CPU niceness `deltaps train` runs at (Linux nice, 0..19)
    replica_slice_ms: float = 0.1  # time slice replicas ask the kernel for; 0: its default
    serving_cpus: str = ""  # CPUs reserved for replicas ("1", "2-3"); "": shared with training
    max_delta: float = 1e6  # largest |change| of one state value a push may carry
    transforms: dict[str, dict] = field(default_factory=dict)
    models: dict[str, ModelSpec] = field(default_factory=dict)
    security: SecuritySpec = field(default_factory=SecuritySpec)

    def model(self, name: str) -> ModelSpec:
        return find_model(self.models, name, "this cluster has")

    def feature_spec(self, model: str) -> FeatureSpec:
        """The featurization a model uses; shared by worker and replica."""
        m = self.model(model)
        transforms = {}
        for tname in m.transforms:
            t = self.transforms[tname]
            transforms[t.get("field", tname)] = Transform(t.get("kind", "log2"),
                                                          tuple(t.get("boundaries", ())))
        return FeatureSpec(tuple(m.fields), transforms, tuple(tuple(c) for c in m.crosses), m.bias)

    def shard_nodes(self) -> list["NodeInfo"]:
        """Where every shard is when `shard_hosts` names them (each on its own host, requests
        on base_port, updates on base_port + 1; e.g. a Kubernetes StatefulSet's stable DNS
        names), so a node needs no cluster file to find them; [] when it does not."""
        if not self.shard_hosts:
            return []
        hosts = [self.shard_hosts.format(index=k) for k in range(self.shards)]
        return [NodeInfo("shard", k, f"tcp://{h}:{self.base_port}",
                         f"tcp://{h}:{self.base_port + 1}") for k, h in enumerate(hosts)]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ClusterSpec":
        d = copy.deepcopy(d)
        models = {name: ModelSpec(**{**m, "optimizer": OptimizerSpec(**m["optimizer"])})
                  for name, m in d.pop("models", {}).items()}
        security = SecuritySpec(**d.pop("security", {}))
        return cls(**d, models=models, security=security)


def _check_keys(section: str, given: dict, allowed: dict) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in [{section}]; known: {sorted(allowed)}")


def _typed(section: str, key: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = True
    if not ok:
        raise ConfigError(f"[{section}] {key} = {value!r}: expected {type(default).__name__}")
    return value


def _merge(section: str, defaults: dict, given: dict) -> dict:
    _check_keys(section, given, defaults)
    out = dict(defaults)
    for key, value in given.items():
        if isinstance(defaults[key], dict):
            out[key] = _merge(f"{section}.{key}", defaults[key], value)
        else:
            out[key] = _typed(section, key, value, defaults[key])
    return out


def _check_optimizer(section: str, opt: dict) -> None:
    if opt["name"] == "adam":
        raise ConfigError(f"[{section}] name = \"adam\": dense Adam moves every row of a sparse "
                          "model at every step; use \"lazy_adam\", which updates only the rows "
                          "an event touches")
    if opt["name"] not in OPTIMIZERS:
        raise ConfigError(f"[{section}] name must be one of {OPTIMIZERS}")
    if opt["name"] == "lazy_adam" and opt["l1"]:
        raise ConfigError(f"[{section}] l1 = {opt['l1']}: lazy_adam has no L1 term; use ftrl "
                          "or adagrad for sparsity")
    if not (0 <= opt["beta1"] < 1 and 0 <= opt["beta2"] < 1):
        raise ConfigError(f"[{section}] beta1 and beta2 must be in [0, 1)")
    if not (opt["learning_rate"] > 0 and opt["epsilon"] >= 0 and opt["beta"] >= 0
            and opt["l1"] >= 0 and opt["l2"] >= 0):
        raise ConfigError(f"[{section}] learning_rate must be > 0; beta, epsilon, l1 and l2 "
                          "must be >= 0")


def _deep_defaults(name: str, given: dict, merged: dict) -> None:
    """A deep model's own defaults (bits, optimizer) where the spec names none, and its checks:
    a slot holds hidden[0] weights and their moments, so 2**22 slots would be gigabytes, and
    its sparse layer learns with lazy Adam, its dense layers with Adam."""
    section = f"models.{name}"
    if "bits" not in given:
        merged["bits"] = DEEP_BITS
    opt = merged["optimizer"] = dict(merged["optimizer"])  # not the defaults' own table
    if "name" not in given.get("optimizer", {}):
        opt["name"] = "lazy_adam"
    if opt["name"] != "lazy_adam":
        raise ConfigError(f"[{section}.optimizer] name = {opt['name']!r}: a deep model learns "
                          "its sparse layer with \"lazy_adam\" (and its dense layers with Adam)")
    if "learning_rate" not in given.get("optimizer", {}):
        opt["learning_rate"] = 0.03
    hidden = merged["hidden"]
    if not hidden or not all(isinstance(h, int) and not isinstance(h, bool)
                             and 1 <= h <= MAX_DEEP_WIDTH for h in hidden):
        raise ConfigError(f"[{section}] hidden = {hidden!r}: a deep model needs at least one "
                          f"hidden layer, each a whole number of units in 1..{MAX_DEEP_WIDTH}")
    if merged["activation"] not in ACTIVATIONS:
        raise ConfigError(f"[{section}] activation = {merged['activation']!r}: must be one of "
                          f"{list(ACTIVATIONS)}")


def load_spec(path: str | Path | None = None, text: str | None = None) -> ClusterSpec:
    """Read a spec (file or TOML text) over the defaults; raise ConfigError naming any bad key."""
    defaults = tomllib.loads(DEFAULTS_PATH.read_text())
    given: dict = {}
    try:
        if path is not None:
            given = tomllib.loads(Path(path).read_text())
        elif text is not None:
            given = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read spec {path or '<text>'}: {exc}") from exc
    _check_keys("spec", given, {"cluster": 0, "transforms": 0, "models": 0, "security": 0})
    cluster = _merge("cluster", defaults["cluster"], given.get("cluster", {}))
    transforms = given.get("transforms", {})
    for tname, t in transforms.items():
        _check_keys(f"transforms.{tname}", t, {"field": 0, "kind": 0, "boundaries": 0})
        if t.get("kind", "log2") not in ("log2", "buckets", "categorical"):
            raise ConfigError(f"[transforms.{tname}] kind must be log2, buckets or categorical")
        if t.get("kind") == "buckets" and list(t.get("boundaries", [])) != sorted(t["boundaries"]):
            raise ConfigError(f"[transforms.{tname}] boundaries must be sorted ascending")
    model_tables = given.get("models") or {"default": {}}
    models = {}
    for name, m in model_tables.items():
        merged = _merge(f"models.{name}", defaults["model"], m)
        if merged["kind"] == "deep":
            _deep_defaults(name, m, merged)
        opt = merged.pop("optimizer")
        if merged["kind"] not in KINDS:
            raise ConfigError(f"[models.{name}] kind = {merged['kind']!r}: must be one of "
                              f"{list(KINDS)}")
        _check_optimizer(f"models.{name}.optimizer", opt)
        if not 1 <= merged["bits"] <= 32:  # pre-hashed reads carry 32 bits of an id
            raise ConfigError(f"[models.{name}] bits must be between 1 and 32")
        for tname in merged["transforms"]:
            if tname not in transforms:
                raise ConfigError(f"[models.{name}] names transform {tname!r}, which is not defined")
        models[name] = ModelSpec(name=name, optimizer=OptimizerSpec(**opt), **merged)
    security = SecuritySpec(**_merge("security", defaults["security"], given.get("security", {})))
    security.check()
    spec = ClusterSpec(**cluster, transforms=transforms, models=models, security=security)
    if spec.fsync not in ("always", "interval", "never"):
        raise ConfigError("[cluster] fsync must be always, interval or never")
    if spec.shard_hosts and ("{index}" not in spec.shard_hosts or not spec.base_port):
        raise ConfigError(f"[cluster] shard_hosts = {spec.shard_hosts!r}: must contain "
                          "\"{index}\" (replaced by each shard's index) and needs base_port "
                          "set (every shard listens on base_port and base_port + 1)")
    if not spec.max_delta > 0:
        raise ConfigError(f"[cluster] max_delta = {spec.max_delta}: must be > 0")
    if spec.snapshots_kept < 1:
        raise ConfigError("[cluster] snapshots_kept must be >= 1")
    if spec.shards < 1 or spec.replicas < 0:
        raise ConfigError("[cluster] shards must be >= 1 and replicas >= 0")
    if not 0 <= spec.worker_nice <= 19:
        raise ConfigError(f"[cluster] worker_nice = {spec.worker_nice}: must be between 0 and 19")
    if spec.replica_slice_ms and not MIN_SLICE_MS <= spec.replica_slice_ms <= MAX_SLICE_MS:
        raise ConfigError(f"[cluster] replica_slice_ms = {spec.replica_slice_ms}: must be 0 or "
                          f"between {MIN_SLICE_MS} and {MAX_SLICE_MS}")
    try:
        parse_cpu_list(spec.serving_cpus)
    except ValueError as exc:
        raise ConfigError(f"[cluster] serving_cpus = {spec.serving_cpus!r}: {exc}; expected CPU "
                          f"numbers and ranges such as \"1\" or \"2-3,6\"") from None
    return spec


@dataclass
class NodeInfo:
    """One node of a running cluster, as the cluster file records it."""

    role: str  # "shard" or "replica"
    index: int
    address: str  # request socket
    pub_address: str = ""  # shards only: update stream
    http_address: str = ""  # replicas only: REST endpoint, "http://host:port"
    metrics_address: str = ""  # /metrics, /healthz, /readyz: "http://host:port"
    pid: int = 0
    restarts: int = 0


@dataclass
class ClusterFile:
    """What `deltaps up` writes: the spec, every node's addresses, the supervisor's pid."""

    spec: ClusterSpec
    nodes: list[NodeInfo]
    supervisor_pid: int = 0

    def shards(self) -> list[NodeInfo]:
        return sorted((n for n in self.nodes if n.role == "shard"), key=lambda n: n.index)

    def replicas(self) -> list[NodeInfo]:
        return sorted((n for n in self.nodes if n.role == "replica"), key=lambda n: n.index)

    def default_model(self) -> str:
        """The cluster's only model; an error naming the choices when there are several."""
        names = sorted(self.spec.models)
        if len(names) != 1:
            raise ConfigError(f"the cluster has models {names}: choose one with --model")
        return names[0]

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"spec": self.spec.to_dict(),
                                   "nodes": [asdict(n) for n in self.nodes],
                                   "supervisor_pid": self.supervisor_pid}, indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "ClusterFile":
        try:
            d = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"no cluster file at {path}: is a cluster running "
                              "(deltaps up)?") from None
        return cls(ClusterSpec.from_dict(d["spec"]), [NodeInfo(**n) for n in d["nodes"]],
                   d.get("supervisor_pid", 0))
