"""Run the whole test suite: bring up what servers it needs, then pytest.

This is what ``make test`` and ``.ci/run`` call. Server tests arrive with the store and
bus backends; each will find its server through an environment URL, started here when
missing. Extra arguments go to pytest.
"""

from __future__ import annotations

import subprocess
import sys


def main() -> int:
    """Run pytest over tests/ and return its exit code."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *sys.argv[1:]]
    return subprocess.call(cmd)  # noqa: S603 - our own interpreter and arguments


if __name__ == "__main__":
    raise SystemExit(main())
