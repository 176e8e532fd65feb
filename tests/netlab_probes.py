"""The programs a `tests.netlab.NetLab` runs inside its namespaces (`python -m
tests.netlab_probes CMD`): a delaying TCP relay standing in for a slow link, a watcher of
the shards' applied pushes, a reading client that counts what succeeded, and waits for a
replica to catch up or a cluster to be ready. Each prints JSON lines for the test or bench to read,
and ends on SIGTERM."""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time

from common.config import ClusterFile


# --- the delaying relay ---------------------------------------------------------------------

async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                delay_s: float) -> None:
    """Copy bytes from reader to writer, each chunk written `delay_s` after it arrived; the
    chunks queue, so the link keeps its bandwidth and only gains latency."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    async def send() -> None:
        while True:
            due, chunk = await queue.get()
            if chunk is None:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()

    sender = asyncio.ensure_future(send())
    try:
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                break
            queue.put_nowait((loop.time() + delay_s, chunk))
        queue.put_nowait((0.0, None))
        await sender
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        sender.cancel()
        writer.close()


async def _relay(pairs: list[tuple[str, str]], delay_s: float) -> None:
    async def serve(target: str):
        host, port = target.rsplit(":", 1)

        async def handle(r_in, w_in):
            try:
                r_out, w_out = await asyncio.open_connection(host, int(port))
            except OSError:
                w_in.close()
                return
            await asyncio.gather(_pump(r_in, w_out, delay_s), _pump(r_out, w_in, delay_s))
        return handle

    servers = []
    for listen, target in pairs:
        host, port = listen.rsplit(":", 1)
        servers.append(await asyncio.start_server(await serve(target), host, int(port)))
    print("listening", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    for s in servers:
        s.close()


# --- a watcher of shard progress, run inside a namespace ------------------------------------

def _watch(addresses: list[str], interval_s: float) -> None:
    """Print a JSON line {"t": wall time, "pushes": [per shard]} whenever any shard's applied
    push count changes (wall clock: the same in every namespace), until SIGTERM."""
    from deploy.admin import node_status
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    last = None
    while not stop:
        counts = []
        for a in addresses:
            st = node_status(a, timeout=interval_s)
            counts.append(None if st is None else
                          sum(m["pushes"] for m in st["models"].values()))
        if counts != last and None not in counts:
            print(json.dumps({"t": time.time(), "pushes": counts}), flush=True)
            last = counts
        time.sleep(interval_s)


def _read(cluster_file: str, model: str, seconds: float, timeout: float) -> None:
    """Read predictions one request after another for `seconds` through every replica of a
    cluster file (serving.client failover), and print {"ok", "failed", "errors", "by_version"
    ...} as one JSON line: what a reading client saw."""
    from serving.client import ServingClient
    cluster = ClusterFile.load(cluster_file)
    ok = failed = 0
    errors: dict[str, int] = {}
    slowest = 0.0
    end = time.monotonic() + seconds
    with ServingClient([n.address for n in cluster.replicas()], timeout) as client:
        while time.monotonic() < end:
            t = time.monotonic()
            try:
                client.predict(model, [{"c1": "a", "i1": 3}])
                ok += 1
            except Exception as exc:  # counted by kind: the test reports what failed
                failed += 1
                name = type(exc).__name__
                errors[name] = errors.get(name, 0) + 1
            slowest = max(slowest, time.monotonic() - t)
    print(json.dumps({"ok": ok, "failed": failed, "errors": errors,
                      "slowest_s": round(slowest, 3)}), flush=True)


def _caught_up(cluster_file: str, replica: int, timeout: float) -> None:
    """Wait until replica `replica` is ready and its version of every model has reached the
    shards' sequence numbers as they were when this started; print the seconds it took (or
    -1 after `timeout`) and the gaps the replica has found so far (each made it re-fetch a
    shard's snapshot)."""
    from deploy.admin import node_status
    cluster = ClusterFile.load(cluster_file)
    start = time.monotonic()
    want = {}
    for n in cluster.shards():
        while (st := node_status(n.address, 0.5)) is None and time.monotonic() - start < timeout:
            time.sleep(0.05)
        for model, m in (st or {"models": {}})["models"].items():
            want.setdefault(model, {})[n.index] = m["seq"]
    address = cluster.replicas()[replica].address
    while time.monotonic() - start < timeout:
        st = node_status(address, 0.5)
        if st and all(st["models"].get(model, {}).get("ready") and
                      all(st["models"][model]["version"][k] >= seq for k, seq in seqs.items())
                      for model, seqs in want.items()):
            print(json.dumps({"seconds": time.monotonic() - start,
                              "gaps": sum(m["gaps"] for m in st["models"].values())}), flush=True)
            return
        time.sleep(0.02)
    print(json.dumps({"seconds": -1, "gaps": -1}), flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.netlab_probes")
    sub = parser.add_subparsers(dest="cmd", required=True)
    relay = sub.add_parser("relay", help="delaying TCP relay")
    relay.add_argument("--pair", action="append", required=True, metavar="LISTEN=TARGET")
    relay.add_argument("--delay-ms", type=float, default=0.0)
    watch = sub.add_parser("watch", help="print shards' applied push counts as they change")
    watch.add_argument("addresses", nargs="+")
    watch.add_argument("--interval-s", type=float, default=0.05)
    read = sub.add_parser("read", help="read predictions for a while; print what succeeded")
    read.add_argument("cluster_file")
    read.add_argument("--model", default="ctr")
    read.add_argument("--seconds", type=float, default=10.0)
    read.add_argument("--timeout", type=float, default=0.5)
    caught = sub.add_parser("caughtup", help="wait until a replica holds the shards' seqs")
    caught.add_argument("cluster_file")
    caught.add_argument("--replica", type=int, required=True)
    caught.add_argument("--timeout", type=float, default=30.0)
    ready = sub.add_parser("ready", help="wait until every node of a cluster file is ready")
    ready.add_argument("cluster_file")
    ready.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.cmd == "ready":
        from deploy.admin import wait_ready
        sys.exit(0 if wait_ready(ClusterFile.load(args.cluster_file), args.timeout) else 1)
    if args.cmd == "read":
        return _read(args.cluster_file, args.model, args.seconds, args.timeout)
    if args.cmd == "caughtup":
        return _caught_up(args.cluster_file, args.replica, args.timeout)
    if args.cmd == "relay":
        pairs = [tuple(p.split("=", 1)) for p in args.pair]
        asyncio.run(_relay(pairs, args.delay_ms / 1000.0))
    else:
        _watch(args.addresses, args.interval_s)


if __name__ == "__main__":
    main()
