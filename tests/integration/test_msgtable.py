"""The message table (proto/tq_msgs.def) is the one description of the
bytes: PROTOCOL.md's tables must say the same, and the C codec (driven by
the table) and the Python codec of these tests (tqmsgs.py, which reads
the table) must give the same bytes for the same messages."""

import json
import os
import random
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tqharness as h  # noqa: E402
import tqmsgs  # noqa: E402

PROTOCOL_MD = os.path.join(tqmsgs.PROTO, "PROTOCOL.md")
VECTORS = os.path.join(h.BUILD, "proto", "tq_msgs_vectors")

MD_WIRE = {"u8": "U8", "u16": "U16", "u32": "U32", "u64": "U64", "i32": "I32", "str8": "STR8"}
MD_JSON = {"integer": "INT", "string": "STR", "boolean": "BOOL", "array of strings": "STRS"}
MD_BODY = {"empty": "EMPTY", "see below": "BIN"}


def md_sections():
    """{heading: text} of PROTOCOL.md's ## and ### sections."""
    with open(PROTOCOL_MD) as f:
        text = f.read()
    out = {}
    parts = re.split(r"^(#{2,3} .*)$", text, flags=re.M)
    for i in range(1, len(parts), 2):
        out[parts[i].lstrip("#").strip()] = parts[i + 1]
    return out


def md_tables(text):
    """The rows (lists of cells) of each markdown table in text, header
    and separator rows left out."""
    tables, cur = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cur is None:
                cur = {"head": cells, "rows": []}
                tables.append(cur)
            elif not set("".join(cells)) <= set("-: "):
                cur["rows"].append(cells)
        else:
            cur = None
    return tables


class MessageTable(unittest.TestCase):
    maxDiff = None

    def test_overview_matches_table(self):
        """Section 4's list: every type, its code, its body and data frames."""
        t = md_tables(md_sections()["4. Messages"])[0]
        self.assertEqual(t["head"][:5], ["type", "name", "sender", "body", "data frames"])
        seen = []
        for code, name, _sender, body, frames, *_ in t["rows"]:
            m = tqmsgs.MSGS.get(name)
            self.assertIsNotNone(m, "PROTOCOL.md lists %s, the table does not" % name)
            self.assertEqual(int(code, 16), m.code, name)
            kind = "JSON" if body.startswith("JSON") else MD_BODY.get(body, body)
            self.assertEqual(kind, m.body, name)
            self.assertEqual(frames != "none", bool(m.frames), name)
            seen.append(name)
        self.assertEqual(seen, list(tqmsgs.MSGS), "same messages in the same order")

    def test_binary_field_tables(self):
        """Each binary message's field table, in order: name and type."""
        sections = md_sections()
        done = set()
        for heading, text in sections.items():
            names = re.findall(r"\b([A-Z_]+) \(0x[0-9A-F]{2}\)", heading)
            names = [n for n in names if n in tqmsgs.MSGS and tqmsgs.MSGS[n].body == "BIN"]
            if not names:
                continue
            tables = [t for t in md_tables(text) if t["head"][:2] == ["field", "type"]]
            self.assertEqual(len(tables), 1, heading)
            doc = []
            for cells in tables[0]["rows"]:
                field, wire = cells[0], cells[1]
                if field.endswith("record:"):
                    continue  # "count × record:" opens the record's fields
                field = re.sub(r"^count × ", "", field)
                doc.append((field, MD_WIRE.get(wire, wire)))
            for n in names:
                want = [(f.name, f.wire) for f in tqmsgs.MSGS[n].fields if f.part != "DATA"]
                self.assertEqual(doc, want, "PROTOCOL.md %r vs tq_msgs.def %s" % (heading, n))
                done.add(n)
        binary = {n for n, m in tqmsgs.MSGS.items() if m.body == "BIN"}
        self.assertEqual(done, binary, "every binary message has its table in PROTOCOL.md")

    def test_json_field_tables(self):
        """Section 12's tables of the control messages the table lists."""
        sections = md_sections()
        checked = set()
        for heading, text in sections.items():
            m = re.match(r"12\.\d+ ([A-Z_]+)$", heading)
            if not m or not tqmsgs.MSGS[m.group(1)].json:
                continue
            name = m.group(1)
            t = [t for t in md_tables(text) if t["head"][:2] == ["field", "type"]]
            self.assertEqual(len(t), 1, heading)
            doc = [(r[0], MD_JSON.get(r[1], r[1])) for r in t[0]["rows"]]
            want = [(j.name, j.type) for j in tqmsgs.MSGS[name].json]
            self.assertEqual(doc, want, "PROTOCOL.md %r vs TQ_JSON_%s" % (heading, name))
            checked.add(name)
        self.assertEqual(checked, {n for n, m in tqmsgs.MSGS.items() if m.json})

    def test_table_rules_are_implemented(self):
        """Each field's rule is one the C codec implements for its part and
        wire type (tq_proto.c: check_fix for FIX; the generated record code
        compiles only sensible combinations of REC and DATA)."""
        allowed = {
            "FIX": {("U32", "ANY"), ("U16", "COUNT"), ("U16", "FLAGS"), ("U16", "LIMIT")},
            "REC": {(w, "ANY") for w in ("U8", "U16", "U32", "I32", "U64")} |
                   {("U8", "RANGE"), ("U64", "WHENFLAG"), ("STR8", "NAME"), ("STR8", "QNAME"),
                    ("STR8", "MAXLEN")},
            "DATA": {("FRAME", "ANY"), ("FRAME", "PAYLOAD")},
        }
        for m in tqmsgs.MSGS.values():
            parts = [f.part for f in m.fields]
            self.assertEqual(parts, sorted(parts, key=["FIX", "REC", "DATA"].index), m.name)
            if m.body == "BIN":
                self.assertEqual([f.check for f in m.fixed].count("COUNT"), 1, m.name)
                self.assertEqual(len(m.data), m.frames, m.name)
            for f in m.fields:
                self.assertIn((f.wire, f.check), allowed[f.part], (m.name, f))

    def test_worked_example(self):
        """Section 13's SUBMIT head, byte for byte."""
        text = md_sections()["13. A worked example: one SUBMIT head frame"]
        want = bytes.fromhex(re.search(r"```\n([0-9a-f ]+)\n```", text).group(1).replace(" ", ""))
        got = tqmsgs.encode("SUBMIT", {"req": 1, "flags": 1},
                            [dict(fn="square", key="job-7", priority=5, timeout_ms=30000,
                                  retries=3, payload=b"7")])
        self.assertEqual(got, [want, b"7"])

    # ---- C and Python: the same bytes -------------------------------------

    def sample(self, rnd, msg):
        """A valid message of type msg with random values."""
        def value(f, fixed):
            if f.wire == "STR8":
                if f.check in ("NAME", "QNAME"):
                    n = rnd.randint(1 if f.check == "NAME" else 0, 64)
                    return bytes(rnd.choice(b"abcXYZ09_.:-") for _ in range(n))
                return bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 128)))
            if f.wire == "FRAME":
                return bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 40)))
            if f.check == "RANGE":
                return rnd.randint(tqmsgs.const(f.a), tqmsgs.const(f.b))
            if f.check in ("LIMIT", "WHENFLAG"):
                return rnd.randint(0, tqmsgs.const(f.b))
            if f.check == "FLAGS":
                return rnd.randint(0, 0xFFFF) & tqmsgs.const(f.a)
            bits = {"U8": 8, "U16": 16, "U32": 32, "U64": 53}[f.wire] if f.wire != "I32" else 31
            v = rnd.getrandbits(bits)
            return -v if f.wire == "I32" and rnd.random() < 0.5 else v
        fixed = {}
        for f in msg.fixed:
            if f.check == "COUNT":
                n = rnd.randint(max(tqmsgs.const(f.a), 0), 5)
            else:
                fixed[f.name] = value(f, fixed)
        fixed["count"] = n
        recs = []
        for _ in range(n):
            r = {}
            for f in msg.record + msg.data:
                if tqmsgs._present(f, fixed):
                    r[f.name] = value(f, fixed)
            recs.append(r)
        return fixed, recs

    @unittest.skipUnless(os.path.exists(VECTORS), "build/proto/tq_msgs_vectors not built")
    def test_python_package_table_matches(self):
        """python/taskq/_proto.py describes the messages a second time (the
        package must not need the C tree): every message, body kind,
        sender, field name, type, order, the conditional field and the
        data frames must be the ones of proto/tq_msgs.def."""
        sys.path.insert(0, os.path.join(h.REPO, "python"))
        try:
            from taskq import _proto as P
        finally:
            sys.path.pop(0)
        body = {"BIN": "binary", "JSON": "json", "EMPTY": "empty"}
        self.assertEqual(sorted(P.BY_NAME), sorted(tqmsgs.MSGS))
        for name, m in tqmsgs.MSGS.items():
            pm = P.BY_NAME[name]
            self.assertEqual((pm.type, pm.body, pm.sender, pm.data),
                             (m.code, body[m.body], m.sender.lower(), bool(m.data)), name)
            for part, pyfields in (("FIX", pm.fixed), ("REC", pm.record)):
                want = [(f.name, f.wire.lower(), f.check == "WHENFLAG")
                        for f in m.fields if f.part == part]
                got = [(f.name, f.type, bool(f.if_flag)) for f in pyfields]
                self.assertEqual(got, want, "%s %s fields" % (name, part))
            for f in pm.record:
                if f.if_flag:
                    self.assertEqual(f.if_flag, tqmsgs.const("TQ_SUBMIT_NOT_BEFORE"), name)

    def test_c_and_python_same_bytes(self):
        rnd = random.Random(1302)
        cases = []
        for msg in tqmsgs.MSGS.values():
            if msg.body != "BIN":
                continue
            for _ in range(25):
                cases.append((msg.name,) + self.sample(rnd, msg))

        def hexed(d):
            return {k: v.hex() if isinstance(v, bytes) else v for k, v in d.items()}
        lines = "".join(json.dumps({"msg": n, "fixed": fx, "records": [hexed(r) for r in rs]})
                        + "\n" for n, fx, rs in cases)
        out = subprocess.run([VECTORS], input=lines.encode(), stdout=subprocess.PIPE,
                             timeout=60, check=True).stdout.decode().splitlines()
        self.assertEqual(len(out), len(cases))
        for (name, fixed, recs), line in zip(cases, out):
            c = json.loads(line)
            self.assertNotIn("error", c, (name, fixed, recs))
            c_frames = [bytes.fromhex(x) for x in c["frames"]]
            py_frames = tqmsgs.encode(name, fixed, recs)
            self.assertEqual(c_frames, py_frames, "C and Python encode %s differently" % name)
            # each decodes the other's bytes to the message it was given
            self.assertEqual(tqmsgs.decode(c_frames), (name, fixed, recs))
            self.assertEqual(c["fixed"], fixed)
            self.assertEqual([{k: v for k, v in r.items() if k in want}
                              for r, want in zip(c["records"], recs)],
                             [hexed(r) for r in recs])


if __name__ == "__main__":
    h.main()
