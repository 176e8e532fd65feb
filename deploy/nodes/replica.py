"""`deltaps serve` / `python -m deploy.nodes.replica`: run one serving replica until SIGTERM."""
from __future__ import annotations

import logging

import click

from common.cpus import format_cpu_list
from common.errors import DeltapsError
from common.logs import setup_logging
from common.security import install as install_curve
from deploy.runtime.allocator import keep_message_buffers_on_heap
from deploy.runtime.options import metrics_listen, node_options, resolve_node
from deploy.runtime.placement import place
from deploy.runtime.priority import request_time_slice
from serving.replica import ReplicaNode


log = logging.getLogger("deltaps.replica")


def ask_for_short_slice(slice_ms: float) -> None:
    """Reads are latency-critical: ask the scheduler to run this replica soon after a read
    wakes it (deploy/runtime/priority.py). Threads started later (zmq's, HTTP's) inherit the
    slice."""
    if not slice_ms:
        return
    got = request_time_slice(slice_ms)
    if got is None:
        log.info("the kernel has no per-task time slices; replica_slice_ms ignored")
    else:
        log.info("running on a %.2f ms time slice", got)


@click.command("serve")
@node_options
@click.option("--shard", "shard_addresses", multiple=True, metavar="REQ_ADDR,PUB_ADDR",
              help="A shard's request and update addresses, in shard order (without --cluster).")
@click.option("--http", "http", default=None, metavar="HOST:PORT",
              help="Serve the REST API (TensorFlow Serving's shape) on HOST:PORT; default: the "
                   "address the cluster file gives this replica, or none without a cluster file.")
def main(cluster_file, spec_file, index, listen, metrics, log_format, shard_addresses, http):
    """Run serving replica INDEX: holds every model whole and answers predict requests."""
    setup_logging(f"replica-{index}", log_format)
    keep_message_buffers_on_heap()
    from common.config import NodeInfo
    from serving.http import parse_listen
    try:
        spec, node, shards = resolve_node("replica", cluster_file, spec_file, index, listen)
        install_curve(spec.security, "replica", serves=True)
    except DeltapsError as exc:
        raise click.ClickException(str(exc))
    if shard_addresses:
        shards = []
        for k, pair in enumerate(shard_addresses):
            req, _, pub = pair.partition(",")
            if not pub:
                raise click.UsageError(f"--shard {pair!r}: expected REQ_ADDR,PUB_ADDR")
            shards.append(NodeInfo("shard", k, req, pub))
    http = http or node.http_address or None
    try:
        http_listen = parse_listen(http) if http else None
    except ValueError as exc:
        raise click.UsageError(f"--http: {exc}")
    try:
        cpus = place("replica", spec.serving_cpus)
    except DeltapsError as exc:
        raise click.ClickException(str(exc))
    if cpus is not None:
        log.info("running on reserved CPU(s) %s", format_cpu_list(cpus))
    ask_for_short_slice(spec.replica_slice_ms)
    try:
        ReplicaNode(spec, index, node.address, shards, http=http_listen,
                    metrics=metrics_listen(metrics, node)).run()
    except DeltapsError as exc:
        raise click.ClickException(str(exc))


if __name__ == "__main__":
    main(auto_envvar_prefix="DELTAPS_SERVE")
