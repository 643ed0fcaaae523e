"""Feature distributions and their drift: a profile is a histogram per feature.

The features stage profiles each training split (decile bins for numeric features, frequencies
for categorical ones, nulls as a bin of their own); the profile is logged with the registered model.
Validation bins the new training split on the champion's own bin edges and categories and compares
the two with the population stability index, PSI = sum((a - e) * ln(a / e)), the usual measure of a
shifted distribution (under 0.1: stable; 0.1 to 0.25: moderate; above 0.25: a large shift).

Only the deciles need the whole split at once, and Spark computes them (in the features stage's one
aggregation of the split's moments).
The histograms are counts, so they are summed over the split's Parquet files in Arrow record batches
(``profile``): memory stays one batch whatever the window, and validation measures drift without a
Spark job (it used to cost two Spark Connect round trips of a few seconds each).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from retrainer.spec.contract import Contract, Role

QUANTILES = [i / 10 for i in range(1, 10)]
QUANTILE_ACCURACY = 10000  # percentile_approx's accuracy: relative error 1/10000 of the rows
MAX_CATEGORIES = 200  # the rest share one "other" bin
NULL_BIN = "__null__"
OTHER_BIN = "__other__"
EPSILON = 1e-4  # stands in for an empty bin, so a bin that appears or vanishes counts without dividing by zero
BATCH_ROWS = 1 << 16


def profile(
    parquet: str | Path,
    contract: Contract,
    *,
    edges: dict[str, list[float]] | None = None,
    reference: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Histogram of every feature of the Parquet folder ``parquet``: numeric features on ``edges`` (a value
    equal to an edge falls in the bin above it), categorical ones by value (as text, integers as ``5``).

    With ``reference`` (a profile), on its bins and categories, and only of the features it has (a feature
    added since has no bins to compare on); without, ``edges`` are required and the categories are the
    ``MAX_CATEGORIES`` most frequent values.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    numeric = [c.name for c in contract.by_role(Role.NUMERIC)]
    categorical = [c.name for c in contract.by_role(Role.CATEGORICAL)]
    if reference is not None:
        numeric = [c for c in numeric if c in reference["numeric"]]
        categorical = [c for c in categorical if c in reference["categorical"]]
        edges = {c: reference["numeric"][c]["edges"] for c in numeric}
    elif edges is None:
        raise ValueError("profile: give the numeric features' bin edges (features.compute_stats) or a reference profile")
    bounds = {c: np.asarray(edges[c], dtype="float64") for c in numeric}
    bins = {c: np.zeros(len(edges[c]) + 1, dtype="int64") for c in numeric}
    nulls = dict.fromkeys(numeric, 0)
    counts: dict[str, Counter[str]] = {c: Counter() for c in categorical}
    rows = 0
    for batch in ds.dataset(str(parquet), format="parquet").to_batches(columns=numeric + categorical,
                                                                     batch_size=BATCH_ROWS):  # fmt: skip
        rows += batch.num_rows
        for c in numeric:
            column = batch.column(c)
            nulls[c] += column.null_count
            values = column.drop_null().to_numpy(zero_copy_only=False).astype("float64")
            # The bin is the number of edges at or below the value (NaN sorts past every edge, as in Spark).
            bins[c] += np.bincount(np.searchsorted(bounds[c], values, side="right"), minlength=len(bins[c]))
        for c in categorical:
            for item in pc.value_counts(pc.cast(batch.column(c), pa.string())).to_pylist():
                counts[c][NULL_BIN if item["values"] is None else item["values"]] += int(item["counts"])
    total = max(rows, 1)
    out: dict[str, Any] = {"rows": rows, "numeric": {}, "categorical": {}}
    for c in numeric:
        out["numeric"][c] = {
            "edges": list(edges[c]),
            "fractions": [int(n) / total for n in bins[c]],
            "null": nulls[c] / total,
        }
    for c in categorical:
        if reference is None:
            top = sorted((v for v in counts[c] if v != NULL_BIN), key=lambda v: (-counts[c][v], v))[:MAX_CATEGORIES]
        else:
            top = [v for v in reference["categorical"][c] if v not in (NULL_BIN, OTHER_BIN)]
        keep = set(top)
        hist = {v: counts[c].get(v, 0) / total for v in top}
        hist[OTHER_BIN] = sum(n for v, n in counts[c].items() if v not in keep and v != NULL_BIN) / total
        hist[NULL_BIN] = counts[c].get(NULL_BIN, 0) / total
        out["categorical"][c] = hist
    return out


def psi(expected: list[float], actual: list[float]) -> float:
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, EPSILON), max(a, EPSILON)
        total += (a - e) * math.log(a / e)
    return total


def drift(reference: dict[str, Any], current: dict[str, Any]) -> dict[str, float]:
    """PSI per feature between two profiles on the same bins (``current`` built with ``reference``), for
    the features both have: after a contract change the champion's profile may lack some or have more."""
    out = {}
    for c in reference["numeric"].keys() & current["numeric"].keys():
        ref, cur = reference["numeric"][c], current["numeric"][c]
        out[c] = round(psi([*ref["fractions"], ref["null"]], [*cur["fractions"], cur["null"]]), 6)
    for c in reference["categorical"].keys() & current["categorical"].keys():
        ref, cur = reference["categorical"][c], current["categorical"][c]
        out[c] = round(psi([ref[v] for v in ref], [cur.get(v, 0.0) for v in ref]), 6)
    return dict(sorted(out.items()))


def not_compared(reference: dict[str, Any], features: list[str]) -> list[str]:
    """The contract's features that ``reference`` has no histogram of (added since it was profiled)."""
    return [f for f in features if f not in reference["numeric"] and f not in reference["categorical"]]
