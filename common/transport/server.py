"""`RequestServer`: the ROUTER socket a node answers requests on.

Each request is decoded, dispatched through the node's `op -> method` table and answered with
the method's reply, or with an `ErrorReply` naming the problem when decoding or the handler
fails: the node keeps running whatever a peer sends.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

import zmq

from common.errors import DeltapsError, Forbidden
from common.messages import ErrorReply, Message
from common.roles import permitted
from common.transport.curve import peer_role
from common.transport.sockets import Endpoint, bind_address, close_socket, new_socket
from common.wire import decode, encode, request_id

log = logging.getLogger(__name__)
Handler = Callable[[Message], Message]


class RequestServer(Endpoint):
    """ROUTER socket answering requests through a handler table."""

    def __init__(self, address: str, handlers: dict[str, Handler], max_bytes: int):
        self._sock = new_socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)  # zmq drops larger frames unread
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.address = bind_address(self._sock, address)
        self.handlers = handlers
        self.max_bytes = max_bytes
        self.before_replies: Callable[[], None] = lambda: None
        self.batch_handlers: dict[str, Callable[[list[Message]], list]] = {}
        self.requests = 0  # requests answered (error replies included)
        self.errors: dict[str, int] = {}  # error replies sent, by error code
        self.forbidden: dict[str, int] = {}  # requests refused by the sender's role, by op

    def bind(self, address: str) -> str:
        """Also answer on `address` (e.g. an inproc endpoint for threads of this process)."""
        return bind_address(self._sock, address)

    def handle_ready(self, max_batch: int = 256) -> None:
        """Answer the requests waiting on the socket as one batch.

        `before_replies` runs once after the batch is handled and before any reply is sent:
        the shard's group commit (one fsync covers every push of the batch). Requests whose op
        has an entry in `batch_handlers` are handed over together, once the others of the batch
        are handled: `batch_handlers[op](messages)` returns one reply (or DeltapsError) each
        (a replica scores several waiting predicts in one vectorized pass).
        """
        replies: list[list] = []  # [identity, reply, rid]
        deferred: dict[str, list[int]] = {}
        for _ in range(max_batch):
            try:
                parts = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            identity, frames = parts[0], [p.buffer for p in parts[1:]]
            msg, rid, refused = self._decode(frames)
            if refused is None and len(parts) > 1:
                refused = self._authorize(peer_role(parts[1]), msg.op)
            if refused is None and msg.op in self.batch_handlers:
                deferred.setdefault(msg.op, []).append(len(replies))
                replies.append([identity, msg, rid])
                continue
            replies.append([identity, refused if refused is not None else self._run(msg), rid])
        if not replies:
            return
        for op, idx in deferred.items():
            for i, reply in zip(idx, self._run_batch(op, [replies[i][1] for i in idx])):
                replies[i][1] = reply
        self.before_replies()
        for identity, reply, rid in replies:
            self.requests += 1
            if isinstance(reply, ErrorReply):
                self.errors[reply.code] = self.errors.get(reply.code, 0) + 1
            try:
                self._sock.send_multipart([identity] + encode(reply, rid), copy=False)
            except zmq.ZMQError as exc:  # peer gone; nothing to do
                log.debug("reply dropped: %s", exc)

    def _decode(self, frames: Sequence) -> tuple[Message | None, int, ErrorReply | None]:
        """(request, rid, None), or (None, rid, error reply) when it cannot be served."""
        rid = 0
        try:
            msg, rid = decode(frames, self.max_bytes)
            if msg.op not in self.handlers and msg.op not in self.batch_handlers:
                raise DeltapsError(f"op {msg.op!r} is not served by this node")
            return msg, rid, None
        except DeltapsError as exc:
            log.warning("refused request: %s", exc)
            return None, rid or request_id(frames), ErrorReply(exc.code, str(exc))

    def _authorize(self, role: str | None, op: str) -> ErrorReply | None:
        """None if a peer of `role` may send `op` (always, without CURVE), else `forbidden`."""
        if role is None or permitted(role, op):
            return None
        self.forbidden[op] = self.forbidden.get(op, 0) + 1
        exc = Forbidden(f"a {role or 'roleless'} key may not send {op!r}")
        log.warning("refused request: %s", exc)
        return ErrorReply(exc.code, str(exc))

    def _run(self, msg: Message) -> Message:
        try:
            handler = self.handlers.get(msg.op)
            if handler is None:  # only a batch handler: a batch of one
                return self._run_batch(msg.op, [msg])[0]
            return handler(msg)
        except DeltapsError as exc:
            log.warning("refused request: %s", exc)
            return ErrorReply(exc.code, str(exc))
        except Exception as exc:  # a handler bug must not take the node down
            log.exception("handler failed")
            return ErrorReply("internal", f"{type(exc).__name__}: {exc}")

    def _run_batch(self, op: str, msgs: list[Message]) -> list[Message]:
        try:
            results = self.batch_handlers[op](msgs)
        except Exception as exc:  # a handler bug must not take the node down
            log.exception("batch handler failed")
            return [ErrorReply("internal", f"{type(exc).__name__}: {exc}")] * len(msgs)
        out = []
        for r in results:
            if isinstance(r, DeltapsError):
                log.warning("refused request: %s", r)
                r = ErrorReply(r.code, str(r))
            out.append(r)
        return out

    def close(self) -> None:
        close_socket(self._sock)
