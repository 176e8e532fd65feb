"""The shard node: wires `ModelShard` stores and the `Coalescer` to sockets.

One thread, one event loop: requests (ROUTER), the publish-window timer and the heartbeat timer
all run in turn, so stores need no locks and a snapshot is always consistent with the sequence
number it reports.
"""
from __future__ import annotations

import logging
import os
import time

from common import messages as m
from common.config import ClusterSpec
from common.errors import ProtocolMismatch, UnknownModel
from common.transport import EventLoop, Publisher, RequestServer
from ps.publisher import Coalescer
from ps.store import ModelShard

log = logging.getLogger("deltaps.shard")


class ShardNode:
    def __init__(self, spec: ClusterSpec, index: int, address: str, pub_address: str):
        self.spec = spec
        self.index = index
        self.stores = {name: ModelShard(model, index, spec.shards)
                       for name, model in spec.models.items()}
        self.coalescer = Coalescer(index, self.stores)
        self.started = time.time()
        self.handlers = {
            "hello": self.on_hello,
            "pull": self.on_pull,
            "push": self.on_push,
            "snapshot": self.on_snapshot,
            "status": self.on_status,
            "shutdown": self.on_shutdown,
        }
        self.server = RequestServer(address, self.handlers, spec.max_message_bytes)
        self.publisher = Publisher(pub_address)
        self.loop = EventLoop()
        self.loop.add_socket(self.server.sock, self.server.handle_ready)
        self.loop.every(spec.publish_window_ms / 1000.0, self.publish)
        self.loop.every(spec.heartbeat_ms / 1000.0, self.heartbeat)

    # --- handlers -----------------------------------------------------------------------------

    def store(self, model: str) -> ModelShard:
        try:
            return self.stores[model]
        except KeyError:
            raise UnknownModel(f"unknown model {model!r}; shard {self.index} holds "
                               f"{sorted(self.stores)}") from None

    def on_hello(self, msg: m.Hello) -> m.HelloReply:
        if msg.protocol != m.PROTOCOL:
            raise ProtocolMismatch(f"protocol version mismatch: {msg.role} speaks {msg.protocol}, "
                                   f"shard {self.index} speaks {m.PROTOCOL}")
        return m.HelloReply(m.PROTOCOL, "shard", self.index, self.spec.shards,
                            {name: {"bits": s.spec.bits} for name, s in self.stores.items()})

    def on_pull(self, msg: m.Pull) -> m.PullReply:
        return m.PullReply(msg.model, self.coalescer.seq.get(msg.model, 0),
                           self.store(msg.model).pull(msg.keys))

    def on_push(self, msg: m.Push) -> m.PushAck:
        rows = self.store(msg.model).push(msg.keys, msg.grads)
        return m.PushAck(msg.model, self.coalescer.mark(msg.model, rows))

    def on_snapshot(self, msg: m.SnapshotRequest) -> m.SnapshotReply:
        store = self.store(msg.model)
        return m.SnapshotReply(msg.model, self.index, self.spec.shards,
                               self.coalescer.seq[msg.model], store.weights.copy())

    def on_status(self, _msg: m.StatusRequest) -> m.StatusReply:
        return m.StatusReply({
            "role": "shard", "index": self.index, "pid": os.getpid(),
            "address": self.server.address, "pub_address": self.publisher.address,
            "state": "serving", "uptime_s": round(time.time() - self.started, 1),
            "models": {name: {"seq": self.coalescer.seq[name], "pushes": s.pushes,
                              "pulls": s.pulls, "slots": s.size}
                       for name, s in self.stores.items()},
        })

    def on_shutdown(self, _msg: m.Shutdown) -> m.Ok:
        self.loop.stop()
        return m.Ok()

    # --- timers -------------------------------------------------------------------------------

    def publish(self) -> None:
        for update in self.coalescer.flush():
            self.publisher.publish(update)

    def heartbeat(self) -> None:
        self.publisher.publish(self.coalescer.heartbeat())

    # --- lifecycle ----------------------------------------------------------------------------

    def run(self) -> None:
        self.loop.install_signal_handlers()
        log.info("shard %d serving on %s, publishing on %s", self.index, self.server.address,
                 self.publisher.address)
        try:
            self.loop.run()
        finally:
            self.publish()
            self.close()
            log.info("shard %d stopped", self.index)

    def close(self) -> None:
        self.server.close()
        self.publisher.close()
