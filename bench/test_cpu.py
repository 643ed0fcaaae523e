"""Sum ``make test``'s CPU accounting (``test-artifacts/test-cpu-*.tsv``, tests/support/cpu_account.py) by test
file, largest first: ``python bench/test_cpu.py [test-artifacts]``. The Spark JVM column overlaps between the two
test processes (one server serves both); the totals line says so."""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path


def by_file(folder: Path) -> dict[str, list[float]]:
    """test file -> [wall, own CPU, children's CPU, Spark JVM CPU, tests] summed over every process's table."""
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0, 0.0])
    for table in sorted(folder.glob("test-cpu-*.tsv")):
        with table.open() as rows:
            for row in csv.DictReader(rows, delimiter="\t"):
                entry = sums[row["test"].split("::", 1)[0]]
                for i, key in enumerate(("wall_s", "cpu_own_s", "cpu_children_s", "cpu_spark_jvm_s")):
                    entry[i] += float(row[key])
                entry[4] += 1
    return dict(sums)


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else Path("test-artifacts")
    sums = by_file(folder)
    if not sums:
        print(f"no test-cpu-*.tsv under {folder}", file=sys.stderr)
        return 1
    print("| test file | tests | wall s | CPU s (process + children) | Spark JVM CPU s (shared) |")
    print("|---|---:|---:|---:|---:|")
    order = sorted(sums.items(), key=lambda kv: -(kv[1][1] + kv[1][2]))
    for name, (wall, own, children, jvm, n) in order:
        print(f"| {name} | {n:.0f} | {wall:.0f} | {own + children:.0f} ({own:.0f} + {children:.0f}) | {jvm:.0f} |")
    total = [sum(v[i] for v in sums.values()) for i in range(5)]
    print(
        f"| all | {total[4]:.0f} | {total[0]:.0f} | {total[1] + total[2]:.0f} ({total[1]:.0f} + {total[2]:.0f}) "
        f"| {total[3]:.0f} (overlapping) |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
