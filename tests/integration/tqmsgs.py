"""The taskq message codec for the tests, read from proto/tq_msgs.def.

proto/tq_msgs.def is the one description of every message's bytes: the C
encoders and decoders are driven by it, and so is this module (it parses
the file; nothing here lists a field). test_msgtable.py checks that both
give the same bytes, and that PROTOCOL.md's tables say the same.

    frames = encode("SUBMIT", {"req": 1, "flags": 1},
                    [{"fn": "square", "payload": b"7"}])
    name, fixed, records = decode(frames)

Fields left out of a record encode as 0 / empty. The encoder checks
nothing (tests send bad input on purpose); the decoder reads what the
table says and raises ValueError when the bytes do not fit."""

import os
import re
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PROTO = os.path.join(REPO, "proto")

INT_WIRE = {"U8": "B", "U16": "H", "U32": "I", "U64": "Q", "I32": "i"}


class Field:
    def __init__(self, part, name, wire, check, a, b):
        self.part, self.name, self.wire, self.check, self.a, self.b = \
            part, name, wire, check, a, b

    def __repr__(self):
        return "Field(%s %s %s %s)" % (self.part, self.name, self.wire, self.check)


class JField:
    def __init__(self, name, jtype, required, a, b):
        self.name, self.type, self.required, self.a, self.b = name, jtype, required, a, b


class Msg:
    def __init__(self, name, code, body, sender, frames):
        self.name, self.code, self.body, self.sender = name, code, body, sender
        self.frames = frames
        self.fields = []   # binary bodies, in wire order
        self.json = []     # JSON bodies, in PROTOCOL.md 12's order

    @property
    def fixed(self):
        return [f for f in self.fields if f.part == "FIX"]

    @property
    def record(self):
        return [f for f in self.fields if f.part == "REC"]

    @property
    def data(self):
        return [f for f in self.fields if f.part == "DATA"]


def _defines():
    """Integer #defines of tq_limits.h and tq_proto.h, and the enum
    constants of tq_proto.h, by name (what the table's a and b name)."""
    consts = {}
    for fn in ("tq_limits.h", "tq_proto.h"):
        with open(os.path.join(PROTO, fn)) as f:
            text = f.read()
        for m in re.finditer(r"^#define (TQ_\w+) (.+?)\s*(?:/\*.*)?$", text, re.M):
            consts[m.group(1)] = m.group(2)
        for m in re.finditer(r"^\s+(TQ_[A-Z_]+) = ([0-9xA-Fa-f]+),", text, re.M):
            consts[m.group(1)] = m.group(2)
    return consts


_CONSTS = None


def const(expr):
    """The value of a table argument: a literal or the C constants it
    names (e.g. TQ_MAX_SLOTS + TQ_MAX_PREFETCH)."""
    global _CONSTS
    if _CONSTS is None:
        _CONSTS = _defines()
    seen = 0
    while True:
        e = re.sub(r"\b(0x[0-9A-Fa-f]+|\d+)(?:[uU]?[lL]{0,2})\b", r"\1", expr)
        names = re.findall(r"\bTQ_\w+\b", e)
        if not names:
            return int(eval(e, {"__builtins__": {}}))  # noqa: S307 (our own header)
        for n in names:
            e = re.sub(r"\b%s\b" % n, "(%s)" % _CONSTS[n], e)
        expr = e
        seen += 1
        if seen > 10:
            raise ValueError("cannot evaluate %r" % expr)


def load(path=None):
    """{name: Msg} from tq_msgs.def, in table order."""
    with open(path or os.path.join(PROTO, "tq_msgs.def")) as f:
        text = f.read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    msgs = {}
    for m in re.finditer(r"\bM\((\w+), (0x[0-9A-Fa-f]+), (\w+), (\w+), (\d), ([\w ]+), (\w+)\)",
                         text):
        msgs[m.group(1)] = Msg(m.group(1), int(m.group(2), 16), m.group(3), m.group(4),
                               int(m.group(5)))
    for m in re.finditer(r"\bF\((\w+), (\w+), (\w+), (\w+), (\w+), ([\w +]+), ([\w +]+)\)", text):
        msgs[m.group(1)].fields.append(Field(*m.group(2, 3, 4, 5, 6, 7)))
    for block in re.finditer(r"#define TQ_JSON_(\w+)\(J\)(.*?)(?:\n\n|\Z)", text, re.S):
        for m in re.finditer(r"\bJ\((\w+), (\w+), (\w+), ([\w +]+), ([\w +]+)\)", block.group(2)):
            msgs[block.group(1)].json.append(JField(*m.groups()))
    return msgs


MSGS = load()
BY_CODE = {m.code: m for m in MSGS.values()}


def head(name, version=1, packed=False):
    return b"TQ" + bytes([version, MSGS[name].code | (0x80 if packed else 0)])


def _put(f, v):
    if f.wire == "STR8":
        if isinstance(v, str):
            v = v.encode()
        return bytes([len(v)]) + v
    return struct.pack("<" + INT_WIRE[f.wire], v)


def _present(f, fixed):
    """A WHENFLAG field is in the record only when its flag is set."""
    return f.check != "WHENFLAG" or fixed.get("flags", 0) & const(f.a)


def encode_record(name, rec, fixed=None):
    """The body bytes of one record."""
    fixed = fixed or {}
    out = b""
    for f in MSGS[name].record:
        if _present(f, fixed):
            out += _put(f, rec.get(f.name, b"" if f.wire == "STR8" else 0))
    return out


def encode(name, fixed=None, records=(), count=None, version=1):
    """Frames of a binary message: fixed fields (count defaults to
    len(records)), the records, then one data frame per record for the
    types that have them."""
    msg = MSGS[name]
    fixed = dict(fixed or {})
    fixed.setdefault("count", len(records) if count is None else count)
    body = b"".join(_put(f, fixed.get(f.name, 0)) for f in msg.fixed)
    body += b"".join(encode_record(name, r, fixed) for r in records)
    frames = [head(name, version) + body]
    for r in records:
        for f in msg.data:
            frames.append(r.get(f.name, b""))
    return frames


def pack(frames):
    """One packed frame (PROTOCOL.md 3.1) of a plain message."""
    pk = b"".join(struct.pack("<I", len(d)) + d for d in frames[1:])
    f0 = frames[0]
    return [f0[:3] + bytes([f0[3] | 0x80]) + f0[4:] + pk + struct.pack("<I", len(pk))]


def _get(f, b, off):
    if f.wire == "STR8":
        if off >= len(b) or off + 1 + b[off] > len(b):
            raise ValueError("truncated at %s" % f.name)
        return b[off + 1:off + 1 + b[off]], off + 1 + b[off]
    fmt = "<" + INT_WIRE[f.wire]
    if off + struct.calcsize(fmt) > len(b):
        raise ValueError("truncated at %s" % f.name)
    return struct.unpack_from(fmt, b, off)[0], off + struct.calcsize(fmt)


def decode(frames):
    """(name, fixed dict, list of record dicts) of a binary message."""
    f0 = frames[0]
    if len(f0) < 4 or f0[:3] != b"TQ\x01" or f0[3] not in BY_CODE:
        raise ValueError("not a v1 message: %r" % f0[:4])
    msg = BY_CODE[f0[3]]
    if msg.body != "BIN":
        raise ValueError("%s has no binary body" % msg.name)
    b, off, fixed = f0[4:], 0, {}
    for f in msg.fixed:
        fixed[f.name], off = _get(f, b, off)
    n = fixed["count"]
    if msg.frames and len(frames) - 1 != n:
        raise ValueError("%s: count %d but %d data frames" % (msg.name, n, len(frames) - 1))
    recs = []
    for i in range(n):
        r = {}
        for f in msg.record:
            if _present(f, fixed):
                r[f.name], off = _get(f, b, off)
        for f in msg.data:
            r[f.name] = frames[1 + i]
        recs.append(r)
    if off != len(b):
        raise ValueError("%s: %d bytes left over" % (msg.name, len(b) - off))
    return msg.name, fixed, recs
