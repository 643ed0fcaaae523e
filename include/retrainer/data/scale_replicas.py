"""Synthetic replicas of landed flights, so the same pipeline runs on K times the real data.

Replica 0 of every row is the real row. Replica r > 0 is the same flight with a distinct flight number
(``flight + r * 10000``), a distinct tail number (another tail number of the planes table, so the planes
join still finds it; an unknown tail number another N-number the planes table does not have) and a small
deterministic jitter of -2..+2 minutes on its delays and air time, each delay's clock time moved with it, so a
replica keeps the raw gate's cross-field rules (a delay is its clock time minus the scheduled one). Weather
and the dimension tables are unchanged. The jitter comes from a hash of (day, replica, row), so landing the
same days twice writes the same bytes.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

FLIGHT_NUMBER_STEP = 10_000
JITTERED = ("dep_delay", "arr_delay", "air_time")
MOVES_WITH = {"dep_delay": "dep_time", "arr_delay": "arr_time"}  # the clock time a delay is measured from


def later_clock(hhmm: str, minutes: int) -> str:
    """An HHMM clock time (1..2400, as the flights files write midnight) ``minutes`` later, across midnight."""
    clock = int(float(hhmm))
    total = (clock // 100 * 60 + clock % 100 + minutes) % 1440 or 1440
    return str(total // 60 * 100 + total % 60)


class FlightReplicas:
    def __init__(self, header: Sequence[str], planes_csv: Path, scale: int) -> None:
        if scale < 1:
            raise ValueError(f"--scale must be at least 1, not {scale}")
        self.scale = scale
        self.flight, self.tailnum = header.index("flight"), header.index("tailnum")
        self.jittered = [header.index(c) for c in JITTERED]
        self.clock = {header.index(d): header.index(t) for d, t in MOVES_WITH.items() if t in header}
        with open(planes_csv, newline="") as fh:
            self.tails = sorted(r["tailnum"] for r in csv.DictReader(fh))
        self.tail_index = {t: i for i, t in enumerate(self.tails)}

    def _tail(self, tail: str, replica: int) -> str:
        if tail in ("", "NA"):
            return tail
        i = self.tail_index.get(tail)
        if i is not None:
            return self.tails[(i + replica * 7919) % len(self.tails)]  # a prime stride: distinct for small r
        for step in range(10):  # still unknown to the planes join, and still shaped like a tail number
            candidate = f"N{(replica + step) % 10}{tail[2:]}"[:6]
            if candidate not in self.tail_index:
                return candidate
        return tail

    def of(self, row: list[str], key: str) -> Iterator[list[str]]:
        """The row itself, then its ``scale - 1`` replicas; ``key`` (day and row number) seeds the jitter."""
        yield row
        for r in range(1, self.scale):
            out = list(row)
            out[self.flight] = str(int(row[self.flight]) + r * FLIGHT_NUMBER_STEP)
            out[self.tailnum] = self._tail(row[self.tailnum], r)
            noise = hashlib.blake2b(f"{key}/{r}".encode(), digest_size=len(self.jittered)).digest()
            for j, byte in zip(self.jittered, noise, strict=True):
                if row[j] not in ("", "NA"):
                    out[j] = str(int(float(row[j])) + byte % 5 - 2)
                    t = self.clock.get(j)
                    if t is not None and row[t] not in ("", "NA"):
                        out[t] = later_clock(row[t], byte % 5 - 2)
            yield out
