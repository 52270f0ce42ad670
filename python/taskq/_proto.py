"""The taskq wire protocol v1 (proto/PROTOCOL.md) as one declarative table.

Every message type is a :class:`Message` row of :data:`MESSAGES`: its type
byte, the sender, its body kind (``json``, ``empty`` or ``binary``), the
fixed fields of a binary body, the fields of each of its ``count``
records, and whether each record has a data frame. The names, types and
order are PROTOCOL.md section 4's, so a check can compare this table with
the C table (proto/). :func:`encode` and :func:`decode` are the only code
that turns messages into frames and back; nothing else in the package
builds bytes by hand.

Field types: ``u8 u16 u32 u64 i32`` little-endian integers, ``str8`` (a
u8 length then that many bytes). A record field may carry a condition
``if_flag``: it is present only when the message's ``flags`` field has
that bit (SUBMIT's ``not_before_ms``).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

VERSION = 1
SIGNATURE = b"TQ"
TYPE_PACKED = 0x80

# Limits (proto/tq_limits.h, PROTOCOL.md section 9).
MAX_BATCH = 1024
MAX_FRAMES = 1026
BATCH_BYTES = 4 * 1024 * 1024  # what a receiver takes in one message
# What a sender puts in one message before it closes the batch (as the C
# peers: TQ_SEND_BYTES): each hop receives and seals a message whole, so
# smaller messages let the hops overlap.
SEND_BYTES = 256 * 1024
MAX_NAME = 64
MAX_KEY = 128
MAX_PEER_NAME = 128
MAX_FUNCTIONS = 256
MAX_SLOTS = 4096
MAX_JSON = 64 * 1024
MAX_STATUS_JSON = 16 * 1024 * 1024
MAX_ADMIN_IDS = 1024
PAYLOAD_DEFAULT_MAX = 64 * 1024 * 1024
AUTHKEY_MIN = 16
AUTHKEY_MIN_DISTINCT = 3
AUTHKEY_MAX = 4096

# SUBMIT flags (section 11).
SUBMIT_SUBSCRIBE = 0x0001
SUBMIT_SCOPED_KEYS = 0x0002
SUBMIT_NOT_BEFORE = 0x0004

# Error codes (section 10).
ERR_NAMES = {
    0: "NONE", 1: "MALFORMED", 2: "VERSION", 3: "UNKNOWN_TYPE", 4: "TOO_LARGE",
    5: "TOO_MANY", 6: "NOT_REGISTERED", 7: "BAD_NAME", 8: "WRONG_ROLE", 9: "FULL",
    10: "SIGNATURE", 11: "INTERNAL", 12: "UNAVAILABLE", 13: "FORBIDDEN",
}
ERR_NOT_REGISTERED = 6

# RESULTS status (a task's outcome), RESULT status (one run), CANCEL_ACK outcome.
TASK_DONE, TASK_FAILED, TASK_CANCELLED, TASK_UNKNOWN, TASK_DEAD = 1, 2, 3, 4, 5
TASK_STATUS_NAMES = {1: "done", 2: "failed", 3: "cancelled", 4: "unknown", 5: "dead"}
RUN_OK, RUN_FAILED, RUN_TIMEOUT = 0, 1, 2
CANCEL_OUTCOME_NAMES = {0: "cancelled", 1: "finished", 2: "unknown"}

_FMT = {"u8": "B", "u16": "H", "u32": "I", "u64": "Q", "i32": "i"}


@dataclass(frozen=True)
class Field:
    """One field of a binary body or record."""

    name: str
    type: str  # u8 u16 u32 u64 i32 str8
    if_flag: int = 0  # present only when flags & if_flag


@dataclass(frozen=True)
class Message:
    """One row of the message table (PROTOCOL.md section 4)."""

    name: str
    type: int
    sender: str  # "peer", "client", "worker", "master", "all"
    body: str  # "json", "empty", "binary"
    fixed: Tuple[Field, ...] = ()  # binary: fields before the records
    record: Tuple[Field, ...] = ()  # binary: fields of each record
    count: Optional[str] = None  # the fixed field holding the record count
    data: bool = False  # one data frame per record
    _plan: Any = field(default=None, compare=False, repr=False)


def _f(spec: str) -> Tuple[Field, ...]:
    """'req:u32 flags:u16' -> Fields; 'name:type?0x4' for a conditional field."""
    out = []
    for item in spec.split():
        name, typ = item.split(":")
        flag = 0
        if "?" in typ:
            typ, f = typ.split("?")
            flag = int(f, 0)
        out.append(Field(name, typ, flag))
    return tuple(out)


# The table. Order of fields is the wire order.
MESSAGES: Tuple[Message, ...] = (
    Message("HELLO", 0x01, "peer", "json"),
    Message("WELCOME", 0x02, "master", "json"),
    Message("HEARTBEAT", 0x03, "all", "empty"),
    Message("ERROR", 0x04, "all", "json"),
    Message("BYE", 0x05, "peer", "empty"),
    Message("STATUS", 0x06, "client", "json"),
    Message("STATUS_REPLY", 0x07, "master", "json"),
    Message("DRAIN", 0x08, "worker", "empty"),
    Message("ADMIN", 0x09, "client", "json"),
    Message("ADMIN_REPLY", 0x0A, "master", "json"),
    Message("SUBMIT", 0x10, "client", "binary", _f("req:u32 flags:u16 count:u16"),
            _f("fn:str8 queue:str8 key:str8 priority:i32 timeout_ms:u32 retries:u16 "
               "not_before_ms:u64?0x0004"), "count", True),
    Message("SUBMIT_ACK", 0x11, "master", "binary", _f("req:u32 count:u16"),
            _f("id:u64"), "count"),
    Message("WAIT", 0x12, "client", "binary", _f("req:u32 count:u16"), _f("id:u64"), "count"),
    Message("RESULTS", 0x13, "master", "binary", _f("count:u16"),
            _f("id:u64 status:u8 attempts:u32"), "count", True),
    Message("CANCEL", 0x14, "client", "binary", _f("req:u32 count:u16"), _f("id:u64"), "count"),
    Message("CANCEL_ACK", 0x15, "master", "binary", _f("req:u32 count:u16"),
            _f("id:u64 outcome:u8"), "count"),
    Message("ACK", 0x16, "client", "binary", _f("req:u32 count:u16"), _f("id:u64"), "count"),
    Message("PUT", 0x17, "client", "binary", _f("req:u32 count:u16"), _f("queue:str8"),
            "count", True),
    Message("PUT_ACK", 0x18, "master", "binary", _f("req:u32 count:u16"), _f("id:u64"),
            "count"),
    Message("GET", 0x19, "client", "binary", _f("req:u32 timeout_ms:u32 max:u16 count:u16"),
            _f("queue:str8"), "count"),
    Message("GOT", 0x1A, "master", "binary", _f("req:u32 count:u16"), _f("id:u64"),
            "count", True),
    Message("TAKE_ACK", 0x1B, "client", "binary", _f("req:u32 count:u16"), _f("id:u64"),
            "count"),
    Message("DISPATCH", 0x20, "master", "binary", _f("count:u16"),
            _f("id:u64 attempt:u32 timeout_ms:u32 fn:str8"), "count", True),
    Message("RESULT", 0x21, "worker", "binary", _f("credit:u16 count:u16"),
            _f("id:u64 attempt:u32 status:u8"), "count", True),
    Message("RELEASE", 0x22, "worker", "binary", _f("count:u16"), _f("id:u64 attempt:u32"),
            "count"),
    Message("KILL", 0x23, "master", "binary", _f("count:u16"), _f("id:u64 attempt:u32"),
            "count"),
    Message("QUIET", 0x24, "master", "empty"),
    Message("STOP", 0x25, "master", "empty"),
)

BY_NAME: Dict[str, Message] = {m.name: m for m in MESSAGES}
BY_TYPE: Dict[int, Message] = {m.type: m for m in MESSAGES}
for _m in MESSAGES:  # module constants: HELLO = 0x01, ...
    globals()[_m.name] = _m.type


class ProtocolError(ValueError):
    """A message that does not follow PROTOCOL.md (names what is wrong)."""


def _fixed_struct(fields: Sequence[Field]) -> Optional[struct.Struct]:
    """One struct for a run of fixed-size fields, or None if any is str8 or conditional."""
    if any(f.type == "str8" or f.if_flag for f in fields):
        return None
    return struct.Struct("<" + "".join(_FMT[f.type] for f in fields))


def _plan(m: Message) -> Tuple[Optional[struct.Struct], Optional[struct.Struct]]:
    plan = m._plan
    if plan is None:
        plan = (_fixed_struct(m.fixed), _fixed_struct(m.record))
        object.__setattr__(m, "_plan", plan)
    return plan


def head(mtype: int) -> bytes:
    return SIGNATURE + bytes((VERSION, mtype))


def _put(out: List[bytes], f: Field, v: Any) -> None:
    if f.type == "str8":
        if isinstance(v, str):
            v = v.encode()
        if len(v) > 255:
            raise ProtocolError("%s: %d bytes, more than a str8 holds" % (f.name, len(v)))
        out.append(bytes((len(v),)) + v)
    else:
        out.append(struct.pack("<" + _FMT[f.type], v))


def encode(name: str, fields: Optional[Dict[str, Any]] = None,
           records: Sequence[Dict[str, Any]] = (), data: Sequence[bytes] = (),
           body: Any = None, packed: bool = False) -> List[bytes]:
    """Frames of one message. ``fields``: the fixed fields (the count is
    filled in); ``records``: dicts of record fields (or tuples in table
    order); ``data``: one frame per record for types with data frames;
    ``body``: the JSON object of a JSON message. ``packed``: one frame
    (section 3.1), for messages with data frames."""
    m = BY_NAME[name]
    h = head(m.type)
    if m.body == "empty":
        return [h]
    if m.body == "json":
        return [h + json.dumps(body if body is not None else {}, separators=(",", ":")).encode()]
    fields = dict(fields or {})
    if m.count:
        fields[m.count] = len(records)
    flags = fields.get("flags", 0)
    fs, rs = _plan(m)
    parts: List[bytes] = []
    if fs is not None:
        parts.append(fs.pack(*[fields[f.name] for f in m.fixed]))
    else:
        for f in m.fixed:
            _put(parts, f, fields[f.name])
    for r in records:
        if isinstance(r, dict):
            if rs is not None:
                parts.append(rs.pack(*[r[f.name] for f in m.record]))
            else:
                for f in m.record:
                    if f.if_flag and not flags & f.if_flag:
                        continue
                    _put(parts, f, r.get(f.name, 0))
        else:  # a tuple in table order
            if rs is not None:
                parts.append(rs.pack(*r))
            else:
                i = 0
                for f in m.record:
                    if f.if_flag and not flags & f.if_flag:
                        i += 1
                        continue
                    _put(parts, f, r[i])
                    i += 1
    frame0 = h + b"".join(parts)
    if not m.data:
        return [frame0]
    if len(data) != len(records):
        raise ProtocolError("%s: %d records but %d data frames" % (name, len(records), len(data)))
    if not packed:
        return [frame0] + list(data)
    pk = b"".join(struct.pack("<I", len(d)) + bytes(d) for d in data)
    return [h[:3] + bytes((m.type | TYPE_PACKED,)) + frame0[4:] + pk + struct.pack("<I", len(pk))]


@dataclass
class Decoded:
    """One received message: its table row, fixed fields, records
    (dicts), data frames (one per record) and, for JSON types, the body."""

    msg: Message
    fields: Dict[str, Any]
    records: List[Dict[str, Any]]
    data: List[bytes]
    body: Any = None

    @property
    def name(self) -> str:
        return self.msg.name


def _unpack_packed(name: str, f0: bytes, body_start: int) -> Tuple[bytes, List[bytes]]:
    if len(f0) < body_start + 4:
        raise ProtocolError("packed %s message: the pack length at the end of frame 0 is "
                            "missing or larger than the frame" % name)
    (plen,) = struct.unpack_from("<I", f0, len(f0) - 4)
    pstart = len(f0) - 4 - plen
    if pstart < body_start:
        raise ProtocolError("packed %s message: the pack length at the end of frame 0 is "
                            "missing or larger than the frame" % name)
    data = []
    off, end = pstart, len(f0) - 4
    mv = memoryview(f0)
    while off < end:
        if off + 4 > end:
            raise ProtocolError("packed %s message: record %d runs past the end of the pack"
                                % (name, len(data)))
        (n,) = struct.unpack_from("<I", f0, off)
        off += 4
        if off + n > end:
            raise ProtocolError("packed %s message: record %d runs past the end of the pack"
                                % (name, len(data)))
        data.append(bytes(mv[off:off + n]))
        off += n
    return f0[:pstart], data


def decode(frames: Sequence[bytes]) -> Decoded:
    """Decode one message (frames as received). Raises ProtocolError
    naming the field when it does not follow the protocol."""
    if not frames or len(frames[0]) < 4:
        raise ProtocolError("frame 0 is empty or shorter than 4 bytes")
    f0 = bytes(frames[0])
    if f0[:2] != SIGNATURE:
        raise ProtocolError("frame 0 does not start with TQ")
    if f0[2] != VERSION:
        raise ProtocolError("protocol version %d, expected %d" % (f0[2], VERSION))
    t = f0[3]
    packed = bool(t & TYPE_PACKED)
    m = BY_TYPE.get(t & ~TYPE_PACKED)
    if m is None:
        raise ProtocolError("unknown message type 0x%02x" % t)
    data = [bytes(x) for x in frames[1:]]
    if packed:
        if not m.data:
            raise ProtocolError("%s cannot be packed" % m.name)
        if data:
            raise ProtocolError("packed %s message has %d data frames, expected none"
                                % (m.name, len(data)))
        f0, data = _unpack_packed(m.name, f0, 4)
    if m.body in ("json", "empty"):
        if data:
            raise ProtocolError("%s has %d data frames, expected none" % (m.name, len(data)))
        if m.body == "empty":
            return Decoded(m, {}, [], [])
        try:
            body = json.loads(f0[4:].decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise ProtocolError("%s: body is not JSON: %s" % (m.name, e)) from None
        if not isinstance(body, dict):
            raise ProtocolError("%s: JSON body is not an object" % m.name)
        return Decoded(m, {}, [], [], body)
    fs, rs = _plan(m)
    off = 4
    fields: Dict[str, Any] = {}
    try:
        if fs is not None:
            for f, v in zip(m.fixed, fs.unpack_from(f0, off)):
                fields[f.name] = v
            off += fs.size
        else:  # no fixed part has str8 today
            for f in m.fixed:
                (fields[f.name],) = struct.unpack_from("<" + _FMT[f.type], f0, off)
                off += struct.calcsize(_FMT[f.type])
    except struct.error:
        raise ProtocolError("%s: truncated fixed part" % m.name) from None
    count = fields.get(m.count, 0) if m.count else 0
    if count > MAX_BATCH:
        raise ProtocolError("%s: count %d over %d" % (m.name, count, MAX_BATCH))
    flags = fields.get("flags", 0)
    records: List[Dict[str, Any]] = []
    names = [f.name for f in m.record]
    for i in range(count):
        if rs is not None:
            if off + rs.size > len(f0):
                raise ProtocolError("%s record %d: truncated" % (m.name, i))
            records.append(dict(zip(names, rs.unpack_from(f0, off))))
            off += rs.size
            continue
        r: Dict[str, Any] = {}
        for f in m.record:
            if f.if_flag and not flags & f.if_flag:
                continue
            if f.type == "str8":
                if off >= len(f0) or off + 1 + f0[off] > len(f0):
                    raise ProtocolError("%s record %d: truncated at %s" % (m.name, i, f.name))
                n = f0[off]
                r[f.name] = f0[off + 1:off + 1 + n]
                off += 1 + n
            else:
                fmt = "<" + _FMT[f.type]
                size = struct.calcsize(fmt)
                if off + size > len(f0):
                    raise ProtocolError("%s record %d: truncated at %s" % (m.name, i, f.name))
                (r[f.name],) = struct.unpack_from(fmt, f0, off)
                off += size
        records.append(r)
    if off != len(f0):
        raise ProtocolError("%s: %d bytes left over after %d records" % (m.name, len(f0) - off,
                                                                       count))
    if m.data:
        if len(data) != count:
            raise ProtocolError("%s: count %d disagrees with %d data frames"
                                % (m.name, count, len(data)))
    elif data:
        raise ProtocolError("%s has %d data frames, expected none" % (m.name, len(data)))
    return Decoded(m, fields, records, data)
