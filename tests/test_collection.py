"""The suite collects the same tests every time.

`make test` runs on pytest-xdist workers, and each worker collects the suite on its own; if two
collections differ (a test id made from something that changes with the clock, such as gzip's
header timestamp) the whole run stops with "Different tests were collected". That happened only
when the workers' collections fell in different seconds, so it passed here and failed in CI:
this test collects twice, more than a second apart, and compares.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _collect() -> list[str]:
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:xdist",
                          "-p", "no:cacheprovider", "tests"], cwd=ROOT, env=dict(os.environ),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return [line for line in out.stdout.splitlines() if "::" in line]


def test_two_collections_a_second_apart_are_identical():
    first = _collect()
    time.sleep(1.1)
    second = _collect()
    assert len(first) > 100, first[-5:]
    # xdist compares the workers' lists in order, so an order change (a set of strings under a
    # different hash seed) stops the run as surely as a changed id
    changed = [(a, b) for a, b in zip(first, second) if a != b]
    assert len(first) == len(second) and not changed, \
        f"{len(first)} vs {len(second)} tests; first that differ between two collections: {changed[:6]}"
