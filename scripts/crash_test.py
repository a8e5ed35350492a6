"""Crash-test the durability promise: `python scripts/crash_test.py --help`. The harness is
tests/crash.py, which the test suite runs briefly (tests/test_crash.py); this is its command
line."""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.crash import main

    sys.exit(main())
