"""`deltaps shard` / `python -m deploy.nodes.shard`: run one shard node until SIGTERM."""
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
from ps.shard import ShardNode

log = logging.getLogger("deltaps.shard")


@click.command("shard")
@node_options
@click.option("--publish", default=None, help="Update-stream address to bind (PUB).")
def main(cluster_file, spec_file, index, listen, metrics, log_format, publish):
    """Run shard INDEX: owns slots with slot % shards == INDEX of every model."""
    setup_logging(f"shard-{index}", log_format)
    keep_message_buffers_on_heap()
    try:
        spec, node, _ = resolve_node("shard", cluster_file, spec_file, index, listen)
        install_curve(spec.security, None, serves=True)
        cpus = place("shard", spec.serving_cpus)
    except DeltapsError as exc:
        raise click.ClickException(str(exc))
    if cpus is not None:
        log.info("running on CPU(s) %s; %s kept for replicas", format_cpu_list(cpus),
                 spec.serving_cpus)
    if not 0 <= index < spec.shards:
        raise click.UsageError(f"--index {index} is outside 0..{spec.shards - 1}")
    pub = publish or node.pub_address
    if not pub:
        raise click.UsageError("no update address: give --publish")
    try:
        ShardNode(spec, index, node.address, pub, metrics_listen(metrics, node)).run()
    except DeltapsError as exc:
        raise click.ClickException(str(exc))


if __name__ == "__main__":
    main(auto_envvar_prefix="DELTAPS_SHARD")
