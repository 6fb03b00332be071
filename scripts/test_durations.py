"""Where the test suite's time goes: seconds per test file and the slowest tests.

Reads the JUnit XML that ``scripts/test --junitxml=FILE`` (pytest) writes and prints
Markdown tables (the ones in docs/testing.md)::

    vmstat -n -t 10 > /tmp/vmstat.log &     # optional: CPU use beside the run
    scripts/test --durations=0 --junitxml=/tmp/junit.xml
    python scripts/test_durations.py /tmp/junit.xml --top 25 --vmstat /tmp/vmstat.log

With ``--vmstat``, each slow test's busy CPU (user + system) is the mean of the samples
taken while it ran: tests run one after another from the suite's start time, so each
one's window is the sum of the durations before it (setup and teardown included).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
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


def suite_start(junit: Path) -> float:
    """When the suite's first test started (epoch seconds)."""
    suite = next(ET.parse(junit).getroot().iter("testsuite"))
    return dt.datetime.fromisoformat(suite.get("timestamp", "")).timestamp()


def cpu_samples(vmstat: Path) -> list[tuple[float, int]]:
    """(time, busy %) of each line of ``vmstat -n -t``: user + system CPU."""
    samples = []
    for line in vmstat.read_text().splitlines()[2:]:
        fields = line.split()
        when = dt.datetime.fromisoformat(f"{fields[-2]}T{fields[-1]}+00:00").timestamp()
        samples.append((when, int(fields[12]) + int(fields[13])))
    return samples


def busy(cases: list[tuple[str, str, float, str]], start: float,
         samples: list[tuple[float, int]]) -> list[float | None]:
    """Each case's mean busy CPU %, None where no sample fell in its window."""
    out: list[float | None] = []
    for _, _, seconds, _ in cases:
        inside = [b for when, b in samples if start <= when < start + seconds]
        out.append(sum(inside) / len(inside) if inside else None)
        start += seconds
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("junit", type=Path)
    parser.add_argument("--top", type=int, default=25, help="slowest tests listed")
    parser.add_argument("--vmstat", type=Path, help="`vmstat -n -t 10` output of the run")
    args = parser.parse_args()
    cases = durations(args.junit)
    total = sum(seconds for _, _, seconds, _ in cases)
    cpu: list[float | None] = [None] * len(cases)
    if args.vmstat:
        start, samples = suite_start(args.junit), cpu_samples(args.vmstat)
        cpu = busy(cases, start, samples)
        during = [b for when, b in samples if start <= when < start + total]
        print(f"busy CPU during pytest: {sum(during) / max(len(during), 1):.0f} % "
              f"({len(during)} samples)")
    outcomes = collections.Counter(outcome for *_, outcome in cases)
    print(f"{len(cases)} tests, {total:.0f} s of pytest; "
          + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())) + "\n")
    by_file: dict[str, list[float]] = collections.defaultdict(list)
    for file, _, seconds, _ in cases:
        by_file[file].append(seconds)
    print("| file | tests | seconds | share |\n|---|---:|---:|---:|")
    for file, times in sorted(by_file.items(), key=lambda kv: -sum(kv[1])):
        print(f"| `{file}` | {len(times)} | {sum(times):.0f} | {sum(times) / total:.0%} |")
    if args.vmstat:
        print("\n| slowest tests | seconds | busy CPU |\n|---|---:|---:|")
    else:
        print("\n| slowest tests | seconds |\n|---|---:|")
    ranked = sorted(zip(cases, cpu, strict=True), key=lambda c: -c[0][2])[:args.top]
    for (file, name, seconds, _), share in ranked:
        column = "" if not args.vmstat else (
            " — |" if share is None else f" {share:.0f} % |")
        print(f"| `{file}::{name}` | {seconds:.0f} |{column}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
