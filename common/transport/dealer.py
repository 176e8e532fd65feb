"""`Dealer`: what the sync `Channel` and the asyncio `AsyncChannel` share.

Both are a DEALER socket to one peer that numbers its requests (so a late reply to a request
that timed out is recognised and dropped), encodes requests, decodes replies, turns an error
reply into `RemoteError`, and, with `monitor`, reads connection events to notice a dropped
connection. Only how they wait differs (zmq poll versus asyncio), so that is all the two
faces add.

Client channels may ask for `immediate=True` (a request is queued only on a live connection,
so a dead peer is noticed at send time instead of after a timeout) and `monitor=True` (a
request in flight on a connection that drops fails at once with `Unreachable`).
"""
from __future__ import annotations

import struct
from typing import Sequence

import zmq

from common.errors import DeltapsError, MalformedMessage, RemoteError
from common.messages import ErrorReply, Message
from common.transport.sockets import Unreachable, client_socket, close_socket
from common.wire import decode, encode

# what a monitor event means for the connection
UP, DOWN = "up", "down"


class Dealer:
    """One peer's DEALER socket with request ids, reply decoding and connection events."""

    def __init__(self, ctx, address: str, max_bytes: int | None, immediate: bool,
                 monitor: bool):
        self.address = address
        self.max_bytes = max_bytes
        self.immediate = immediate
        self._sock, self._monitor = client_socket(ctx, address, immediate, monitor)
        self._next_rid = 1

    def _new_request(self, msg: Message) -> tuple[int, list]:
        """(a fresh request id, the frames of `msg` carrying it)."""
        rid = self._next_rid
        self._next_rid += 1
        return rid, encode(msg, rid)

    def _decode_reply(self, parts: Sequence) -> tuple[Message, int]:
        """(reply, request id) from received frames; MalformedMessage names the peer."""
        try:
            return decode([p.buffer for p in parts], self.max_bytes)
        except DeltapsError as exc:
            raise MalformedMessage(f"bad reply from {self.address}: {exc}") from exc

    def unwrap(self, msg: Message) -> Message:
        """`msg`, or RemoteError (naming the peer) when it is an error reply."""
        if isinstance(msg, ErrorReply):
            raise RemoteError(msg.code, f"{self.address}: {msg.message}")
        return msg

    @staticmethod
    def _connection_event(frames: Sequence) -> str | None:
        """UP, DOWN, or None for what a monitor message says about the connection. Its
        first frame is the event (uint16) and its value (int32), as zmq_socket_monitor(3)
        lays them out; read here rather than with zmq.utils.monitor, which imports asyncio."""
        if len(frames) != 2 or len(frames[0]) != 6:
            raise MalformedMessage(f"monitor message of {len(frames)} frame(s) is not an event")
        event = struct.unpack("=Hi", frames[0])[0]
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            return UP
        if event == zmq.EVENT_DISCONNECTED:
            return DOWN
        return None

    def _dropped(self, waiting: bool = True) -> Unreachable:
        return Unreachable(f"connection to {self.address} dropped"
                           + (" while waiting for a reply" if waiting else ""))

    def _close_sockets(self) -> None:
        close_socket(self._sock, self._monitor)
