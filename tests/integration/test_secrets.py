"""No process keeps a secret it does not need (issue 18, point 2;
docs/security.md, "Task processes hold no secret").

A C function (api_plugin.so's memscan) scans its own process's memory
for a 32-byte value: the worker's client secret key, derived from the
authkey as common/tq_authkey.h says. Run in thread mode, inside the
worker, it finds libzmq's copy, which shows that the scan sees the key
where it is. Run in prefork or spawn mode it must find none: those
children come from the fork server, a copy of the worker made before the
key was read (workerlib/forkserver.h). The server's secret key is never
kept by a worker, not even in the worker itself."""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tqharness import (TQTestCase, main, BUILD, derive_keys, zmq,  # noqa: E402
                       key_bytes_from_file)

API_SO = os.path.join(BUILD, "tests", "api_plugin.so")


def needle(z85_secret):
    """memscan's payload for a Z85 key: its 32 bytes XOR 0x5a in hex."""
    raw = zmq.utils.z85.decode(z85_secret)
    return bytes(b ^ 0x5a for b in raw).hex()


class ChildKeyTest(TQTestCase):
    def setUp(self):
        super().setUp()
        self.start_master()
        _, self.server_secret, _, self.client_secret = derive_keys(key_bytes_from_file(self.key))

    def copies(self, value):
        r = self.tq_ok("map", "--fn", "memscan", needle(value))
        m = re.fullmatch(r"copies (\d+) in (\d+) regions\n?", r.out)
        self.assertTrue(m, r)
        # the scan read the process's memory, not an empty list of regions
        self.assertGreater(int(m.group(2)), 5, r)
        return int(m.group(1))

    def worker(self, mode):
        self.start_worker("--plugin", API_SO, "--fn-mode", "memscan=" + mode, concurrency=1)

    def test_thread_mode_sees_the_client_key_inside_the_worker(self):
        self.worker("thread")
        self.assertGreaterEqual(self.copies(self.client_secret), 1)
        self.assertEqual(self.copies(self.server_secret), 0)

    def test_prefork_child_holds_no_key(self):
        self.worker("prefork")
        self.assertEqual(self.copies(self.client_secret), 0)
        self.assertEqual(self.copies(self.server_secret), 0)

    def test_spawn_child_holds_no_key(self):
        self.worker("spawn")
        self.assertEqual(self.copies(self.client_secret), 0)
        self.assertEqual(self.copies(self.server_secret), 0)


if __name__ == "__main__":
    main()
