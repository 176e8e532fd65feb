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
@click.option("--http", "http", default=None, metavar="HOST:PORT",
              help="Serve the REST API (TensorFlow Serving's shape) on HOST:PORT; default: the "
                   "address the cluster file gives this replica, or none without a cluster file.")
def main(cluster_file, spec_file, index, listen, shard_addresses, http):
    """Run serving replica INDEX: holds every model whole and answers predict requests."""
    setup_logging(f"replica-{index}")
    from common.config import NodeInfo
    from serving.http import parse_listen
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
    http = http or node.http_address or None
    try:
        http_listen = parse_listen(http) if http else None
    except ValueError as exc:
        raise click.UsageError(f"--http: {exc}")
    try:
        ReplicaNode(spec, index, node.address, shards, http=http_listen).run()
    except DeltapsError as exc:
        raise click.ClickException(str(exc))


if __name__ == "__main__":
    main(auto_envvar_prefix="DELTAPS_SERVE")
