"""Where the test suite's time goes: seconds per test file and the slowest tests.

Reads the JUnit XML that ``scripts/test --junitxml=FILE`` (pytest) writes and prints
Markdown tables (the ones in docs/testing.md)::

    scripts/test --durations=0 --junitxml=/tmp/junit.xml
    python scripts/test_durations.py /tmp/junit.xml --top 25
"""

from __future__ import annotations

import argparse
import collections
import xml.etree.ElementTree as ET
from pathlib import Path


def durations(junit: Path) -> list[tuple[str, str, float, str]]:
    """(file, test, seconds, outcome) of every test case in ``junit``."""
    out = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").split(".")
        file = "/".join(module[:-1] if module[-1][:1].isupper() else module) + ".py"
        outcome = ("failed" if case.find("failure") is not None or case.find("error") is not None
                   else "skipped" if case.find("skipped") is not None else "passed")
        out.append((file, case.get("name", ""), float(case.get("time", 0)), outcome))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("junit", type=Path)
    parser.add_argument("--top", type=int, default=25, help="slowest tests listed")
    args = parser.parse_args()
    cases = durations(args.junit)
    total = sum(seconds for _, _, seconds, _ in cases)
    outcomes = collections.Counter(outcome for *_, outcome in cases)
    print(f"{len(cases)} tests, {total:.0f} s of pytest; "
          + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())) + "\n")
    by_file: dict[str, list[float]] = collections.defaultdict(list)
    for file, _, seconds, _ in cases:
        by_file[file].append(seconds)
    print("| file | tests | seconds | share |\n|---|---:|---:|---:|")
    for file, times in sorted(by_file.items(), key=lambda kv: -sum(kv[1])):
        print(f"| `{file}` | {len(times)} | {sum(times):.0f} | {sum(times) / total:.0%} |")
    print("\n| slowest tests | seconds |\n|---|---:|")
    for file, name, seconds, _ in sorted(cases, key=lambda c: -c[2])[:args.top]:
        print(f"| `{file}::{name}` | {seconds:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
