"""Command-line options shared by the node commands (`deltaps shard`, `deltaps serve`).

A node learns its spec and addresses either from a running cluster's file (`--cluster`) or,
when run by hand or in a container, from a spec file and explicit addresses.
"""
from __future__ import annotations

import click

from common.config import ClusterFile, ClusterSpec, NodeInfo, load_spec


def node_options(f):
    f = click.option("--cluster", "cluster_file", type=click.Path(dir_okay=False),
                     help="Cluster file written by `deltaps up`; gives spec and addresses.")(f)
    f = click.option("--spec", "spec_file", type=click.Path(exists=True, dir_okay=False),
                     help="Spec TOML, when running without a cluster file.")(f)
    f = click.option("--index", type=int, required=True, help="This node's index (0-based).")(f)
    f = click.option("--listen", default=None,
                     help="Request address to bind, e.g. tcp://0.0.0.0:5000.")(f)
    f = click.option("--metrics", "metrics", default=None, metavar="HOST:PORT",
                     help="Serve /metrics, /healthz and /readyz on HOST:PORT (port 0: a free "
                          "one); default: the address the cluster file gives this node, or "
                          "none without a cluster file.")(f)
    f = click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
                     help="Log lines as text or as JSON objects (default: $DELTAPS_LOG_FORMAT, "
                          "else text).")(f)
    return f


def metrics_listen(given: str | None, node: NodeInfo) -> tuple[str, int] | None:
    """(host, port) of the node's metrics endpoint: --metrics, else the cluster file's."""
    from serving.http import parse_listen
    text = given or node.metrics_address
    if not text:
        return None
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise click.UsageError(f"--metrics: {exc}")


def resolve_node(role: str, cluster_file: str | None, spec_file: str | None, index: int,
                 listen: str | None) -> tuple[ClusterSpec, NodeInfo, list[NodeInfo]]:
    """(spec, this node, all shards) from either a cluster file or a spec plus addresses."""
    if cluster_file:
        cf = ClusterFile.load(cluster_file)
        mine = [n for n in cf.nodes if n.role == role and n.index == index]
        if not mine:
            raise click.UsageError(f"cluster file has no {role} with index {index}")
        node = mine[0]
        if listen:
            node.address = listen
        return cf.spec, node, cf.shards()
    if not listen:
        raise click.UsageError("give --cluster, or --spec with --listen")
    spec = load_spec(spec_file)
    return spec, NodeInfo(role, index, listen), spec.shard_nodes()
