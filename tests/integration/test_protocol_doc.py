"""proto/PROTOCOL.md stays true: its section 14 Python client, extracted
verbatim from the document, runs against the real master and worker.

The document shows it being run as
    python3 taskq_submit.py ENDPOINT AUTHKEY_FILE FN PAYLOAD
and printing the result (`7 * 7 = 49` for `square 7`)."""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tqharness import TQTestCase, REPO, main  # noqa: E402

DOC = os.path.join(REPO, "proto", "PROTOCOL.md")
SECTION = "## 14."


def example_client():
    """The ```python blocks of section 14 (up to the next ## heading),
    joined in order: the runnable client."""
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    start = text.find("\n" + SECTION)
    if start < 0:
        raise AssertionError("%s: no section '%s'" % (DOC, SECTION))
    rest = text[start + 1:]
    m = re.search(r"^## ", rest[3:], re.M)
    section = rest if m is None else rest[:m.start() + 3]
    blocks = re.findall(r"^```python\n(.*?)^```", section, re.S | re.M)
    if not blocks:
        raise AssertionError("%s section 14: no ```python block" % DOC)
    return "\n".join(blocks)


class ProtocolDocExample(TQTestCase):
    def setUp(self):
        super().setUp()
        self.start_master()
        self.start_worker(concurrency=2)
        self.script = os.path.join(self.tmp, "taskq_submit.py")
        with open(self.script, "w", encoding="utf-8") as f:
            f.write(example_client())

    def run_example(self, fn, payload):
        return self.run_prog(["/usr/bin/python3", self.script, self.endpoint, self.key,
                              fn, payload], timeout=30)

    def test_example_is_a_whole_program(self):
        src = example_client()
        self.assertIn("def main(", src)
        self.assertIn('if __name__ == "__main__":', src)
        compile(src, "taskq_submit.py", "exec")

    def test_square_7(self):
        r = self.run_example("square", "7")
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(r.out, "7 * 7 = 49\n", r)
        self.assertRegex(r.err, r"task id \d+")

    def test_echo_and_failure(self):
        r = self.run_example("echo", "hello from the protocol document")
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(r.out, "hello from the protocol document\n", r)
        # A failing task: exit 1, the error on stderr (it has 3 retries).
        r = self.run_example("fail", "doc-boom")
        self.assertEqual(r.rc, 1, r)
        self.assertEqual(r.out, "", r)
        self.assertRegex(r.err, r"task \d+ failed after \d+ attempts: .*doc-boom")

    def test_result_is_stored_in_the_master(self):
        r = self.run_example("square", "12")
        self.assertEqual(r.out, "12 * 12 = 144\n", r)
        tid = re.search(r"task id (\d+)", r.err).group(1)
        w = self.tq_ok("wait", "--timeout", "10", tid)
        self.assertEqual(w.out, "12 * 12 = 144\n")


if __name__ == "__main__":
    main()
