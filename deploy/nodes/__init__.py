"""The processes a cluster is made of: `python -m deploy.nodes.shard`, `deploy.nodes.replica`,
`deploy.nodes.worker` (also `deltaps shard|serve|train`).

An entry point parses flags, resolves its spec and addresses and tunes its own process
(deploy/runtime), then hands over to the node classes in ps/, serving/ and worker/. Keeping
the entry points here lets those packages import only `common/`.
"""
