"""`deltaps serve` / `python -m serving`: run one serving replica until SIGTERM."""
from __future__ import annotations

import click

from common.errors import DeltapsError
from common.logs import setup_logging
from common.nodeopts import node_options, resolve_node
from serving.replica import ReplicaNode


@click.command("serve")
@node_options
@click.option("--shard", "shard_addresses", multiple=True, metavar="REQ_ADDR,PUB_ADDR",
              help="A shard's request and update addresses, in shard order (without --cluster).")
def main(cluster_file, spec_file, index, listen, shard_addresses):
    """Run serving replica INDEX: holds every model whole and answers predict requests."""
    setup_logging(f"replica-{index}")
    from common.config import NodeInfo
    try:
        spec, node, shards = resolve_node("replica", cluster_file, spec_file, index, listen)
    except DeltapsError as exc:
        raise click.ClickException(str(exc))
    if shard_addresses:
        shards = []
        for k, pair in enumerate(shard_addresses):
            req, _, pub = pair.partition(",")
            if not pub:
                raise click.UsageError(f"--shard {pair!r}: expected REQ_ADDR,PUB_ADDR")
            shards.append(NodeInfo("shard", k, req, pub))
    try:
        ReplicaNode(spec, index, node.address, shards).run()
    except DeltapsError as exc:
        raise click.ClickException(str(exc))


if __name__ == "__main__":
    main(auto_envvar_prefix="DELTAPS_SERVE")
