"""One CURVE DEALER connection to a master: socket set-up, the handshake
watch (wrong key vs unreachable, as common/tq_curve.c does it), sending,
receiving and the heartbeat clock. Not thread-safe: one thread owns it
(the client's I/O thread, or the worker's loop)."""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, Dict, List, Optional

import zmq
from zmq.utils.monitor import parse_monitor_message

from . import _proto

# NO_DETAIL handshake failures (EPIPE: the master dropped us mid
# handshake) in a row that count as a wrong key; FAILED_AUTH and
# FAILED_PROTOCOL count at once (common/tq_curve.c TQ_HSWATCH_FAILS).
HANDSHAKE_FAILS = 2

_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
           | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
           | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECTED)


def default_name() -> str:
    """``host:pid``, the name the C programs show in status."""
    host = "".join(c for c in socket.gethostname() if 33 <= ord(c) < 127) or "host"
    return "%s:%d" % (host[:100], os.getpid())


class Link:
    """A DEALER to ``endpoint`` with the derived CURVE keys."""

    def __init__(self, ctx: zmq.Context, endpoint: str, keys: Dict[str, Any]) -> None:
        self.ctx = ctx
        self.endpoint = endpoint
        self.keys = keys
        self.sock: Optional[zmq.Socket] = None
        self.mon: Optional[zmq.Socket] = None
        self.fails = 0
        self.handshook = False
        self.hb_s = 1.0
        self.hb_timeout_s = 5.0
        self.max_payload = _proto.PAYLOAD_DEFAULT_MAX
        self.packed = False
        self.last_send = self.last_recv = time.monotonic()

    def open(self) -> None:
        """A fresh socket (after close(), for a reconnect)."""
        self.close()
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVHWM, 0)
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.CURVE_SERVERKEY, self.keys["server"][0])
        s.setsockopt(zmq.CURVE_PUBLICKEY, self.keys["client"][0])
        s.setsockopt(zmq.CURVE_SECRETKEY, self.keys["client"][1])
        s.setsockopt(zmq.RECONNECT_IVL, 100)
        s.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        self.mon = s.get_monitor_socket(_EVENTS)
        s.connect(self.endpoint)
        self.sock = s
        self.fails = 0
        self.handshook = False
        self.last_send = self.last_recv = time.monotonic()

    def close(self, linger_ms: int = 0) -> None:
        if self.sock is not None:
            try:
                self.sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self.sock.close(linger=linger_ms)
            self.sock = None
        if self.mon is not None:
            self.mon.close(linger=0)
            self.mon = None

    def send(self, frames: List[bytes]) -> None:
        self.sock.send_multipart(frames, copy=False)
        self.last_send = time.monotonic()

    def send_msg(self, name: str, **kw: Any) -> None:
        self.send(_proto.encode(name, **kw))

    def hello(self, body: Dict[str, Any]) -> None:
        self.send_msg("HELLO", body=body)

    def welcome(self, w: Dict[str, Any]) -> None:
        """Take the master's settings from WELCOME."""
        self.hb_s = max(0.001, int(w.get("heartbeat_ms", 1000)) / 1000.0)
        self.hb_timeout_s = max(0.01, int(w.get("heartbeat_timeout_ms", 5000)) / 1000.0)
        self.max_payload = int(w.get("max_payload", _proto.PAYLOAD_DEFAULT_MAX))
        self.packed = bool(w.get("packed", False))
        self.last_recv = time.monotonic()

    def recv(self) -> Optional[_proto.Decoded]:
        """The next message without blocking, or None. HEARTBEATs and
        undecodable messages count as life and are skipped."""
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return None
            self.last_recv = time.monotonic()
            try:
                m = _proto.decode(frames)
            except _proto.ProtocolError:
                continue
            if m.msg.type == _proto.HEARTBEAT:
                continue
            return m

    def handshake_verdict(self) -> int:
        """Read pending monitor events: 1 handshake succeeded, -1 the key
        is wrong, 0 nothing decisive."""
        result = 0
        while self.mon is not None:
            try:
                frames = self.mon.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                ev = parse_monitor_message(frames)["event"]
            except Exception:  # noqa: BLE001 - a malformed event decides nothing
                continue
            if ev == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.handshook = True
                self.fails = 0
                result = 1
            elif ev in (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
                return -1
            elif ev == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                self.fails += 1
                if self.fails >= HANDSHAKE_FAILS:
                    return -1
        return result

    def heartbeat_due(self, now: float) -> bool:
        return now - self.last_send >= self.hb_s

    def silent(self, now: float) -> bool:
        return now - self.last_recv >= self.hb_timeout_s


def error_body(m: _proto.Decoded) -> Dict[str, Any]:
    b = m.body or {}
    return {"code": int(b.get("code", 0)), "message": str(b.get("message", "")),
            "ref": int(b.get("ref", 0))}


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
