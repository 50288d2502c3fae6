"""The README's Python examples run, against two live servers (needs BATON_BIN).

Each ```python block of ../README.md runs in a fresh interpreter (the one running the tests, so
the installed package under ci.sh) from an empty directory, with the ports 8080 and 8081 of the
examples replaced by those of two `baton serve` processes; that is the only change.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import unittest

import baton
from test_live import HAVE_BIN, SKIP_REASON, Server

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "README.md")


@unittest.skipUnless(HAVE_BIN, SKIP_REASON)
class ReadmeExamples(unittest.TestCase):
    def test_examples_run(self) -> None:
        with open(README, encoding="utf-8") as f:
            blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
        self.assertGreaterEqual(len(blocks), 3)
        # the interpreter finds the same baton the tests import (installed, or the source tree)
        env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(baton.__file__)))}
        a, b = Server(), Server()
        try:
            with tempfile.TemporaryDirectory() as empty:
                for i, block in enumerate(blocks):
                    code = block.replace("8080", str(a.port)).replace("8081", str(b.port))
                    done = subprocess.run([sys.executable, "-c", code], cwd=empty, env=env,
                                          capture_output=True, text=True, timeout=60)
                    self.assertEqual(done.returncode, 0, f"README example {i + 1} failed:\n{done.stderr}")
        finally:
            a.kill()
            b.kill()


if __name__ == "__main__":
    unittest.main()
