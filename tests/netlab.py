"""A network laboratory of Linux network namespaces, for tests and benchmarks that need each
node on its own address, links that can be cut, and slow links.

`NetLab(hosts)` makes one namespace per host plus a "switch" namespace holding a bridge; each
host reaches the bridge through a veth pair and gets an address of a private /24
(10.77.X.0/24) that exists only inside the namespaces made here, with loopback up. The root
namespace is never touched: veth pairs are created inside the switch namespace and their far
ends moved straight into the host's. Names carry a per-run prefix, so runs side by side (or a
run after a killed one) never meet.

- `popen(host, argv)` runs a process in a host's namespace (`ip netns exec`, which execs: the
  PID is the process itself) and tracks it by PID; `run(host, argv)` waits for one.
- `partition(host)` sets the host's veth end in the switch namespace down (its packets go
  nowhere, as with a pulled cable; the host keeps its address); `heal(host)` sets it up.
- `relay(host, pairs, delay_ms)` starts a TCP relay (asyncio, `python -m tests.netlab_probes
  relay`) in a host's namespace that forwards each byte after `delay_ms` one way, standing in
  for a slow link where the kernel has no netem.
- `cluster(...)` writes a cluster file placing each shard and replica on its own host.

Everything made is removed by `close()` (processes by PID, then namespaces, then tmp dirs),
also when a test fails; `NetLab` is a context manager. `unavailable()` says why namespaces
cannot be made here (not root, no `ip`), for a test to skip with that reason.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

from common.config import ClusterFile


REPO = Path(__file__).resolve().parents[1]
NET = "10.77"
SHARD_PORT, REPLICA_PORT, HTTP_PORT, METRICS_PORT = 5000, 6000, 8501, 9100


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check,
                          timeout=30)


def unavailable() -> str | None:
    """Why this machine cannot run a NetLab, or None when it can (it tries one namespace)."""
    if os.geteuid() != 0:
        return "network namespaces need root (run as root, e.g. in CI)"
    if shutil.which("ip") is None:
        return "no `ip` command (apt-get install iproute2)"
    name = f"dpsprobe{os.getpid()}{secrets.token_hex(2)}"
    made = _ip("netns", "add", name, check=False)
    if made.returncode != 0:
        return f"cannot make a network namespace: {made.stderr.strip()}"
    try:
        br = _ip("-n", name, "link", "add", "br0", "type", "bridge", check=False)
        if br.returncode != 0:
            return f"cannot make a bridge in a namespace: {br.stderr.strip()}"
    finally:
        _ip("netns", "del", name, check=False)
    return None


class NetLab:
    """Host namespaces on one bridge; see the module docstring."""

    def __init__(self, hosts: Sequence[str], workdir: str | Path | None = None):
        if len(set(hosts)) != len(hosts) or not hosts:
            raise ValueError(f"hosts must be distinct names, got {list(hosts)}")
        self.prefix = f"dps{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.switch = f"{self.prefix}-sw"
        self.hosts = list(hosts)
        self.ns = {h: f"{self.prefix}-{h}" for h in hosts}
        self.port_of = {h: f"p{i}" for i, h in enumerate(hosts)}  # veth end in the switch
        subnet = secrets.randbelow(250) + 1
        self.subnet = f"{NET}.{subnet}.0/24"
        self.net = f"{NET}.{subnet}"  # host i is {net}.{10 + i}
        self.addr = {h: f"{self.net}.{10 + i}" for i, h in enumerate(hosts)}
        self._own_tmp = workdir is None
        self.dir = Path(tempfile.mkdtemp(prefix="netlab-") if workdir is None else workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen] = []
        self._made: list[str] = []
        self.down: dict[str, str] = {}  # host -> how it was cut

    # --- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> "NetLab":
        self.up()
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def up(self) -> "NetLab":
        try:
            self._add_ns(self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            for h in self.hosts:
                ns, port = self.ns[h], self.port_of[h]
                self._add_ns(ns)
                _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name",
                    "eth0", "netns", ns)
                _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
                _ip("-n", ns, "addr", "add", f"{self.addr[h]}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def _add_ns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def close(self) -> None:
        """End every process started here (SIGTERM, then SIGKILL), then anything still in
        a namespace made here (descendants of those), then the namespaces and the tmp dir."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for ns in self._made:
            pids = _ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for ns in reversed(self._made):  # hosts first: their veth pairs go with them
            _ip("netns", "del", ns, check=False)
        self._made.clear()
        if self._own_tmp:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- processes --------------------------------------------------------------------------

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns[host], *argv]

    def popen(self, host: str, argv: Sequence[str], log: str | Path | None = None,
              **kwargs) -> subprocess.Popen:
        """Start `argv` in `host`'s namespace (output to `log`, or to a pipe when None)."""
        out = open(log, "ab") if log is not None else subprocess.PIPE
        try:
            p = subprocess.Popen(self.command(host, argv), cwd=REPO, stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT if log else subprocess.PIPE,
                                 **kwargs)
        finally:
            if log is not None:
                out.close()
        self.procs.append(p)
        return p

    def run(self, host: str, argv: Sequence[str], timeout: float = 120,
            **kwargs) -> subprocess.CompletedProcess:
        """Run `argv` in `host`'s namespace to its end: (returncode, stdout, stderr)."""
        p = self.popen(host, argv, **kwargs)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            raise AssertionError(f"{' '.join(argv)} on {host} ran over {timeout}s:\n"
                                 f"{out.decode()}{err.decode()}") from None
        return subprocess.CompletedProcess(argv, p.returncode, out.decode(), err.decode())

    def python(self, host: str, *args: str, **kwargs) -> subprocess.Popen:
        return self.popen(host, [sys.executable, *args], **kwargs)

    # --- links ------------------------------------------------------------------------------

    def partition(self, host: str, how: str = "link") -> None:
        """Cut `host` off. "link": its veth end in the switch goes down (a pulled cable: the
        host's own sends fail at once, which Linux TCP retries without backing off); "drop":
        the switch's bridge silently drops every frame from and to it (a failure in the
        middle of the network: both ends see only loss and back off exponentially)."""
        port = self.port_of[host]
        if how == "link":
            _ip("-n", self.switch, "link", "set", port, "down")
        elif how == "drop":
            rules = (f"table bridge cut_{port} {{\n chain forward {{\n type filter hook "
                     f"forward priority 0; policy accept;\n iifname \"{port}\" drop\n "
                     f"oifname \"{port}\" drop\n }}\n}}\n")
            self._nft(rules)
        else:
            raise ValueError(f"partition how={how!r}: expected 'link' or 'drop'")
        self.down[host] = how

    def heal(self, host: str) -> None:
        how = self.down.pop(host, None)
        if how == "link":
            _ip("-n", self.switch, "link", "set", self.port_of[host], "up")
        elif how == "drop":
            self._nft(f"delete table bridge cut_{self.port_of[host]}\n")

    def _nft(self, text: str) -> None:
        subprocess.run(["ip", "netns", "exec", self.switch, "nft", "-f", "-"], input=text,
                       text=True, check=True, capture_output=True, timeout=30)

    def relay(self, host: str, pairs: Sequence[tuple[str, str]], delay_ms: float,
              log: str | Path | None = None) -> subprocess.Popen:
        """A delaying relay in `host`'s namespace: each (listen "ip:port", target "ip:port")
        pair forwards both ways with `delay_ms` added one way. Returns once it listens."""
        args = ["-m", "tests.netlab_probes", "relay", "--delay-ms", str(delay_ms)]
        for listen, target in pairs:
            args += ["--pair", f"{listen}={target}"]
        ready = Path(log) if log else self.dir / f"relay-{host}-{len(self.procs)}.log"
        p = self.python(host, *args, log=ready)
        deadline = time.monotonic() + 20
        while b"listening" not in (ready.read_bytes() if ready.exists() else b""):
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"relay on {host} did not start:\n"
                                   + (ready.read_text() if ready.exists() else ""))
            time.sleep(0.05)
        return p

    # --- a cluster placed on the hosts ------------------------------------------------------

    def cluster(self, spec_text: str, shard_hosts: Sequence[str],
                replica_hosts: Sequence[str], **settings) -> Path:
        """Write a cluster file placing shard k on `shard_hosts[k]` and replica r on
        `replica_hosts[r]`, every node on its host's address and the same ports, its data in
        this lab's directory; returns the file's path (`self.cluster_file`)."""
        from common.config import NodeInfo, load_spec
        spec = load_spec(text=spec_text)
        spec.shards, spec.replicas = len(shard_hosts), len(replica_hosts)
        spec.data_dir = str(self.dir / "data")
        for key, value in settings.items():
            setattr(spec, key, value)
        nodes = []
        for k, h in enumerate(shard_hosts):
            a = self.addr[h]
            nodes.append(NodeInfo("shard", k, f"tcp://{a}:{SHARD_PORT}",
                                  f"tcp://{a}:{SHARD_PORT + 1}",
                                  metrics_address=f"http://{a}:{METRICS_PORT}"))
        for r, h in enumerate(replica_hosts):
            a = self.addr[h]
            nodes.append(NodeInfo("replica", r, f"tcp://{a}:{REPLICA_PORT}",
                                  http_address=f"http://{a}:{HTTP_PORT}",
                                  metrics_address=f"http://{a}:{METRICS_PORT}"))
        self.placed = {**{("shard", k): h for k, h in enumerate(shard_hosts)},
                       **{("replica", r): h for r, h in enumerate(replica_hosts)}}
        self.nodes: dict[tuple[str, int], subprocess.Popen] = {}
        self.cluster_file = self.dir / "cluster.json"
        ClusterFile(spec, nodes).save(self.cluster_file)
        return self.cluster_file

    def start_node(self, role: str, index: int) -> subprocess.Popen:
        """Run a node of the cluster file on its host (`python -m deploy.nodes.*`)."""
        module = {"shard": "deploy.nodes.shard", "replica": "deploy.nodes.replica"}[role]
        p = self.python(self.placed[(role, index)], "-m", module, "--cluster",
                        str(self.cluster_file), "--index", str(index),
                        log=self.dir / f"{role}-{index}.log")
        self.nodes[(role, index)] = p
        return p

    def start_cluster(self, from_host: str, timeout: float = 90) -> None:
        """Start every node of the cluster file (shards first) and wait, from `from_host`,
        until all answer as serving or ready."""
        for role, index in sorted(self.placed, key=lambda n: (n[0] != "shard", n[1])):
            self.start_node(role, index)
        cluster = ClusterFile.load(self.cluster_file)  # PIDs, for `deltaps status`
        for n in cluster.nodes:
            n.pid = self.nodes[(n.role, n.index)].pid
        cluster.save(self.cluster_file)
        self.wait_ready(from_host, timeout)

    def wait_ready(self, from_host: str, timeout: float = 60) -> None:
        done = self.run(from_host, [sys.executable, "-m", "tests.netlab_probes", "ready",
                                    str(self.cluster_file), "--timeout", str(timeout)],
                        timeout=timeout + 30)
        if done.returncode != 0:
            raise RuntimeError(f"cluster not ready after {timeout}s: {done.stdout}{done.stderr}"
                               + "".join(f"\n--- {r}-{i}:\n{self.log(r, i)[-3000:]}"
                                         for r, i in self.placed))

    def log(self, role: str, index: int) -> str:
        path = self.dir / f"{role}-{index}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def deltaps(self, host: str, *args: str, timeout: float = 180,
                cluster: bool = True) -> subprocess.CompletedProcess:
        """`deltaps ARGS --cluster <this lab's cluster file>` run on `host`."""
        extra = ["--cluster", str(self.cluster_file)] if cluster else []
        return self.run(host, [sys.executable, "-m", "deploy.cli", *args, *extra],
                        timeout=timeout)


class RssSampler(threading.Thread):
    """Peak resident memory of a process, sampled every 50 ms while it runs: over the whole
    run (`peak_mb`) and since the last `mark` (`peak_since_mark_mb`)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak_mb, self.now_mb, self.peak_since_mark_mb = pid, 0.0, 0.0, 0.0
        self.start()

    def mark(self) -> float:
        """Start a new window (its peak so far: the current value); returns that value."""
        self.peak_since_mark_mb = self.now_mb
        return self.now_mb

    def run(self):
        while True:
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
            except (OSError, StopIteration):
                return
            self.now_mb = rss / 1024
            self.peak_mb = max(self.peak_mb, self.now_mb)
            self.peak_since_mark_mb = max(self.peak_since_mark_mb, self.now_mb)
            time.sleep(0.05)


class PushWatch(threading.Thread):
    """The shards' applied push counts, as a watcher (`python -m tests.netlab_probes watch`)
    in `host` sees them change; the lab's cluster file names the shards."""

    def __init__(self, net, host: str):
        super().__init__(daemon=True)
        self.proc = net.python(host, "-m", "tests.netlab_probes", "watch",
                               *(n.address for n in ClusterFile.load(net.cluster_file).shards()))
        self.lines: list[dict] = []
        self.start()

    def run(self):
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def pushes(self) -> list[int]:
        return self.lines[-1]["pushes"] if self.lines else [0, 0]

    def stalled(self, quiet_s: float, timeout: float) -> bool:
        """Wait until no shard's count has changed for `quiet_s` seconds (a worker cut off
        from a shard has finished what it had in flight and is blocked); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.lines[-1]["t"] if self.lines else 0.0
            if time.time() - last >= quiet_s:
                return True
            time.sleep(0.05)
        return False

    def first_change_after(self, t: float, timeout: float) -> float | None:
        """Seconds from wall time `t` to the first change of every shard's count after it."""
        base = self.pushes()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [x for x in self.lines if x["t"] > t]
            if later and all(a > b for a, b in zip(later[-1]["pushes"], base)):
                moved = [next(x["t"] for x in later if x["pushes"][k] > base[k])
                         for k in range(len(base))]
                return max(moved) - t
            time.sleep(0.01)
        return None
