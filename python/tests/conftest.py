"""Session-wide hooks for python/tests.

The property tests (test_properties.py) count the Hypothesis cases they run; the
totals are printed at the end of the session and, when KERAS_SWIFT_HYPOTHESIS_COUNTS
names a file, written there as JSON (the README reports these figures).
"""

import json
import os
import sys


def pytest_terminal_summary(terminalreporter):
    mod = sys.modules.get("test_properties")
    counts = getattr(mod, "CASES", None)
    if not counts:
        return
    profile = os.environ.get("KERAS_SWIFT_HYPOTHESIS_PROFILE", "ci")
    total = sum(counts.values())
    parts = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    terminalreporter.write_line(f"hypothesis cases run (profile {profile}): {total} ({parts})")
    path = os.environ.get("KERAS_SWIFT_HYPOTHESIS_COUNTS")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"profile": profile, "total": total, **counts}, f, indent=1)
