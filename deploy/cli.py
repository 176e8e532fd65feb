"""The `deltaps` command: launch, inspect and use a cluster.

Every option can also be set by environment variable: DELTAPS_<COMMAND>_<OPTION>, e.g.
DELTAPS_UP_SHARDS=4 or DELTAPS_TRAIN_BATCH_SIZE=64.
"""
from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from common.config import ClusterFile, load_spec
from common.errors import DeltapsError
from common.security import install as install_curve, make_keys, make_token, secured
from deploy.layout import cluster_file_path, plan_cluster
from deploy.runtime.placement import cpus_for
from deploy.workers import alive, worker_rows

CLUSTER_OPTION = click.option("--cluster", "cluster_file", default=".deltaps/cluster.json",
                              show_default=True, help="Cluster file of the running cluster.")


class _Commands(click.Group):
    """The node commands are imported only when run (or listed by --help): `deltaps train`
    then loads the worker alone, not the shard's and the replica's code, and `deltaps status`
    or `down` loads none of them."""

    NODES = {"shard": "deploy.nodes.shard", "serve": "deploy.nodes.replica",
             "train": "deploy.nodes.worker"}

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *self.NODES})

    def get_command(self, ctx, name):
        if name in self.NODES and name not in self.commands:
            self.add_command(importlib.import_module(self.NODES[name]).main, name)
        return super().get_command(ctx, name)


@click.group(cls=_Commands,
             context_settings={"auto_envvar_prefix": "DELTAPS", "show_default": True})
def cli():
    """deltaps: a parameter server for online learning of sparse models."""


@cli.command()
@click.option("--spec", "spec_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Cluster spec TOML (see common/defaults.toml); default: one model, 2 shards.")
@click.option("--shards", type=click.IntRange(1, 256), default=None, help="Override [cluster] shards.")
@click.option("--replicas", type=click.IntRange(0, 64), default=None,
              help="Override [cluster] replicas.")
@click.option("--dir", "data_dir", default=None, help="Override [cluster] data_dir.")
@click.option("--timeout", default=60.0, help="Seconds to wait for the cluster to be ready.")
@click.option("--build-kernel/--no-build-kernel", default=True,
              help="Compile the worker's kernel ahead of time if this version has no build "
                   "yet, so `deltaps train` starts without numba's JIT (worker/models/prebuilt.py).")
@click.option("--secure", is_flag=True,
              help="CurveZMQ on every socket and a bearer token on HTTP, with fresh keys written "
                   "to DATA_DIR/keys (README, Security).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="Node and supervisor logs as text or JSON lines (default: "
                   "$DELTAPS_LOG_FORMAT, else text).")
def up(spec_file, shards, replicas, data_dir, timeout, build_kernel, secure, log_format):
    """Start a local cluster in the background and wait until every replica is ready."""
    try:
        spec = load_spec(spec_file)
        for role in ("replica", "shard"):  # a reservation this machine cannot honour fails here
            cpus_for(role, spec.serving_cpus)
    except DeltapsError as exc:
        raise click.ClickException(str(exc))
    spec.shards = shards or spec.shards
    spec.replicas = spec.replicas if replicas is None else replicas
    spec.data_dir = data_dir or spec.data_dir
    from deploy.admin import cluster_status, wait_ready
    path = cluster_file_path(spec.data_dir).resolve()
    if path.exists():
        old = ClusterFile.load(path)
        if alive(old.supervisor_pid):
            raise click.ClickException(f"a cluster is already running from {path} "
                                       f"(supervisor pid {old.supervisor_pid}); `deltaps down` first")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if secure:
            keys = path.parent / "keys"
            make_keys(keys)
            spec.security = secured(spec.security, keys, token=make_token(keys))
        install_curve(spec.security, "admin")
    except DeltapsError as exc:
        raise click.ClickException(str(exc))
    cluster = plan_cluster(spec)
    cluster.save(path)
    log = open(path.parent / "supervisor.log", "ab")
    # Its own process group (Ctrl-C in this terminal does not reach it) but the caller's
    # session: with kernel autogroup, niceness only orders processes of one session, so a
    # `deltaps train` started from this shell yields to the cluster's replicas only if the
    # cluster is in the same session.
    env = {**os.environ, **({"DELTAPS_LOG_FORMAT": log_format} if log_format else {})}
    proc = subprocess.Popen([sys.executable, "-m", "deploy.supervisor", str(path)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            process_group=0, env=env)
    cluster.supervisor_pid = proc.pid
    cluster.save(path)
    builder = _start_kernel_build(path.parent / "kernel-build.log") if build_kernel else None
    if not wait_ready(cluster, timeout):
        if builder is not None:
            builder[0].kill()
            builder[0].wait()
        click.echo(_status_table(cluster_status(ClusterFile.load(path))), err=True)
        raise click.ClickException(f"cluster not ready after {timeout:.0f}s; logs in "
                                   f"{path.parent / 'logs'}")
    if builder is not None:
        _finish_kernel_build(*builder)
    click.echo(f"cluster up: {spec.shards} shard(s), {spec.replicas} replica(s), models "
               f"{', '.join(sorted(spec.models))}; cluster file {path}"
               + (f"; CURVE keys and HTTP token in {path.parent / 'keys'}" if secure else ""))


def load_cluster(cluster_file: str, role: str) -> ClusterFile:
    """The running cluster, with this process's CURVE keys for `role` (if it runs CURVE)."""
    cluster = ClusterFile.load(cluster_file)
    install_curve(cluster.spec.security, role)
    return cluster


@cli.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for the key pairs (made 0700; secret files 0600).")
def keys(out_dir):
    """Make CURVE key pairs for the servers and each role (worker, replica, client, admin)
    and print the [security] section that admits them."""
    made = make_keys(out_dir)
    click.echo(f"[security]\ncurve = true\nkeys_dir = {str(Path(out_dir).resolve())!r}")
    for role, public in made.items():
        if role != "server":
            click.echo(f"{role} = [{Path(public).name!r}]")


def _start_kernel_build(log_path: Path):
    """The worker kernel's ahead-of-time build, started beside the cluster's start-up when this
    version of the kernel has none: (process, log path), or None when there is one."""
    from worker.models import prebuilt
    if prebuilt.module_path().is_file():
        return None
    log = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "worker.models.prebuilt"], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    return proc, log_path


def _finish_kernel_build(proc: subprocess.Popen, log_path: Path) -> None:
    if proc.poll() is None:
        click.echo("compiling the worker's kernel (once per version of deltaps)...", err=True)
    if proc.wait() != 0:
        click.echo(f"the worker's kernel was not prebuilt (see {log_path}); deltaps train "
                   f"uses numba's JIT instead: same results, about a second more to start",
                   err=True)


@cli.command()
@CLUSTER_OPTION
@click.option("--timeout", default=20.0, help="Seconds to wait before killing what remains.")
def down(cluster_file, timeout):
    """Stop the cluster: SIGTERM to the supervisor, which stops every node."""
    try:
        cluster = ClusterFile.load(cluster_file)
    except DeltapsError as exc:
        raise click.ClickException(str(exc))
    pids = [cluster.supervisor_pid] + [n.pid for n in cluster.nodes]
    if alive(cluster.supervisor_pid):
        os.kill(cluster.supervisor_pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in pids if alive(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    Path(cluster_file).unlink(missing_ok=True)
    click.echo("cluster down" + (f" (killed {len(left)} stuck process(es))" if left else ""))


def _status_table(rows: list[dict]) -> str:
    w = max([22] + [len(r.get(k) or "") for r in rows for k in ("address", "http", "metrics")])
    lines = [f"{'NODE':<10} {'ADDRESS':<{w}} {'HTTP':<{w}} {'METRICS':<{w}} {'PID':>7} "
             f"{'CPUS':<6} {'RESTARTS':>8} {'STATE':<8} MODELS"]
    for r in rows:
        models = "; ".join(
            f"{name} seq={st['seq']}" if "seq" in st else
            f"{name} from {st['source']}" + _worker_progress(st) if "source" in st else
            f"{name} v={st['version']} lag={st['lag']} stale={st['staleness_ms']:.0f}ms"
            for name, st in r["models"].items())
        lines.append(f"{r['role'] + '-' + str(r['index']):<10} {r['address']:<{w}} "
                     f"{r.get('http') or '-':<{w}} {r.get('metrics') or '-':<{w}} "
                     f"{r['pid']:>7} {r.get('cpus') or '-':<6} "
                     f"{r['restarts']:>8} {r['state']:<8} {models}")
    return "\n".join(lines + _declared_lines(rows))


def _worker_progress(st: dict) -> str:
    """A worker's events learned, and a stream source's lag and pending entries, when known."""
    return "".join(f" {key}={st[key]:,}" for key in ("events", "lag", "pending") if key in st)


def _declared_lines(rows: list[dict]) -> list[str]:
    """Each declared model's input, as the first shard that answers keeps it."""
    shown: dict[str, dict] = {}
    for r in rows:
        for name, st in r["models"].items():
            if r["role"] == "shard" and st.get("declared") and name not in shown:
                shown[name] = st["declared"]
    return [f"model {name}: declared by {d['source']}; fields {d['fields']}; crosses "
            f"{d['crosses'] or 'none'}; optimizer {d['optimizer']}" for name, d in shown.items()]


@cli.command()
@CLUSTER_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(cluster_file, as_json):
    """Every node of the cluster: role, address, pid, CPUs, state, sequence numbers, lag."""
    from deploy.admin import cluster_status
    try:
        rows = cluster_status(load_cluster(cluster_file, "admin")) + worker_rows(cluster_file)
    except DeltapsError as exc:
        raise click.ClickException(str(exc))
    click.echo(json.dumps(rows, indent=2) if as_json else _status_table(rows))
    if any(r["state"] == "down" for r in rows):
        sys.exit(1)


@cli.command("verify")
@CLUSTER_OPTION
@click.option("--timeout", default=30.0, help="Seconds to wait for replicas to catch up.")
def verify_cmd(cluster_file, timeout):
    """Check that every replica holds exactly the shards' weights (run after traffic stops).

    Compares a checksum of each shard's slice of each model with the replica's copy, at the
    same version; exits non-zero on any difference.
    """
    from deploy.admin import verify
    try:
        rows = verify(load_cluster(cluster_file, "admin"), timeout)
    except DeltapsError as exc:
        raise click.ClickException(str(exc))
    for r in rows:
        click.echo(f"replica-{r['replica']} {r['model']} shard {r['shard']}: "
                   f"{'OK' if r['ok'] else 'DIFFERS'} ({r['reason']})")
    bad = [r for r in rows if not r["ok"]]
    if bad or not rows:
        raise click.ClickException(f"{len(bad)} difference(s)" if rows else "nothing to verify")
    click.echo(f"all {len(rows)} replica/model/shard copies match")


@cli.command()
@CLUSTER_OPTION
def snapshot(cluster_file):
    """Make every shard write a snapshot now (they also do so on a timer and on SIGTERM)."""
    from deploy.admin import take_snapshots
    try:
        for shard, path, lsn in take_snapshots(load_cluster(cluster_file, "admin")):
            click.echo(f"shard-{shard}: {path} (log position {lsn})")
    except DeltapsError as exc:
        raise click.ClickException(str(exc))


@cli.command()
@click.argument("instances", nargs=-1)
@CLUSTER_OPTION
@click.option("--model", default=None, help="Model to ask (default: the cluster's only model).")
@click.option("--timeout", default=5.0, help="Seconds to wait for a replica.")
def predict(instances, cluster_file, model, timeout):
    """Probabilities for INSTANCES (JSON feature objects), or for JSON lines on stdin."""
    from serving.client import ServingClient
    try:
        texts = list(instances) or [line for line in sys.stdin.read().splitlines() if line.strip()]
        parsed = []
        for i, text in enumerate(texts, 1):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise click.ClickException(f"instance {i} is not JSON: {exc}")
            parsed.extend(value if isinstance(value, list) else [value])
        cluster = load_cluster(cluster_file, "client")
        model = model or cluster.default_model()
        with ServingClient([n.address for n in cluster.replicas()], timeout) as client:
            result = client.predict(model, parsed)
    except DeltapsError as exc:
        raise click.ClickException(str(exc))
    click.echo(json.dumps({"predictions": [round(float(p), 6) for p in result.probabilities],
                           "version": result.version, "staleness_ms": result.staleness_ms}))


@cli.command()
@click.argument("events", type=click.IntRange(1))
@click.option("--seed", default=0, help="Seed of the planted model and the stream.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="File to write.")
@click.option("--format", "fmt", default="tsv", type=click.Choice(["tsv", "jsonl"]))
def synth(events, seed, out, fmt):
    """Write EVENTS events of the seeded synthetic stream (Criteo-like TSV or JSON lines)."""
    from worker.sources import write_synthetic
    info = write_synthetic(out, events, seed, fmt=fmt)
    click.echo(f"wrote {events:,d} events to {out}" + (f" ({info})" if info else ""))


@cli.command()
@click.argument("source")
@click.option("--buckets", default=16, type=click.IntRange(2), help="Buckets per field.")
@click.option("--events", default=100_000, type=click.IntRange(1),
              help="Events of the calibration prefix.")
@click.option("--field", "fields", multiple=True, help="Numeric field (default: all of them).")
@click.option("--schema", default=None, help="Column kinds of a CSV/TSV file, as for train.")
def calibrate(source, buckets, events, fields, schema):
    """Print [transforms] tables of percentile bucket boundaries for numeric fields, from the
    first EVENTS events of SOURCE (any source `train` reads): put them in the spec, and every
    worker and replica buckets those fields alike."""
    from common.features.discretizer import calibrate as boundaries_of, transforms_toml
    from worker.sources import open_source
    try:
        src = open_source(source, schema=schema)
        batches = iter(lambda: src.read(min(events, 65536)), None)
        click.echo(transforms_toml(boundaries_of(batches, buckets, fields, events)), nl=False)
    except (OSError, ValueError, DeltapsError) as exc:
        raise click.ClickException(str(exc))


@cli.command()
@CLUSTER_OPTION
@click.option("--model", default=None, help="Model to export (default: the cluster's only model).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory to write.")
def export(cluster_file, model, out):
    """Write a model as a TensorFlow SavedModel (for TensorFlow Serving): its serving signature
    takes pre-hashed feature ids and row splits and returns probabilities. Needs TensorFlow."""
    from deploy.export import export_saved_model, fetch_weights
    try:
        cluster = ClusterFile.load(cluster_file)
        model = model or cluster.default_model()
        path = export_saved_model(cluster.spec.model(model), fetch_weights(cluster, model), out)
    except DeltapsError as exc:
        raise click.ClickException(str(exc))
    click.echo(f"exported model {model} to {path}")


def main(argv=None):
    cli.main(args=argv, prog_name="deltaps")


if __name__ == "__main__":
    main()
