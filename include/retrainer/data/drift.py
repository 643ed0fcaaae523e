"""Feature distributions and their drift, computed in Spark: a profile is a histogram per feature.

The features stage profiles each training split (decile bins for numeric features, frequencies
for categorical ones, nulls as a bin of their own); the profile is logged with the registered model.
Validation bins the new training split on the champion's own bin edges and categories and compares
the two with the population stability index, PSI = sum((a - e) * ln(a / e)), the usual measure of a
shifted distribution (under 0.1: stable; 0.1 to 0.25: moderate; above 0.25: a large shift).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from retrainer.spec.contract import Contract, Role

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

QUANTILES = [i / 10 for i in range(1, 10)]
MAX_CATEGORIES = 200  # the rest share one "other" bin
NULL_BIN = "__null__"
OTHER_BIN = "__other__"
EPSILON = 1e-4  # stands in for an empty bin, so a bin that appears or vanishes counts without dividing by zero


def profile(df: DataFrame, contract: Contract, reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """Histogram of every feature of ``df``; on ``reference``'s bins when given (to compare with it), and
    then only of the features the reference has (a feature added since has no bins to compare on).

    Two aggregations over ``df`` (three without a reference): nothing but the counts reach the driver.
    """
    from pyspark.sql import functions as F

    numeric = [c.name for c in contract.by_role(Role.NUMERIC)]
    categorical = [c.name for c in contract.by_role(Role.CATEGORICAL)]
    if reference is not None:
        numeric = [c for c in numeric if c in reference["numeric"]]
        categorical = [c for c in categorical if c in reference["categorical"]]
    if reference is None:
        row = df.agg(*[F.percentile_approx(c, QUANTILES, 10000).alias(c) for c in numeric]).first()
        edges = {c: sorted({float(e) for e in (row[c] or [])}) for c in numeric}
    else:
        edges = {c: reference["numeric"][c]["edges"] for c in numeric}

    aggs = [F.count(F.lit(1)).alias("__rows")]
    for c in numeric:
        bucket = F.when(F.col(c).isNull(), F.lit(-1)).otherwise(
            sum((F.col(c) >= F.lit(e)).cast("int") for e in edges[c]) if edges[c] else F.lit(0)
        )
        for i in range(-1, len(edges[c]) + 1):
            aggs.append(F.sum(F.when(bucket == i, 1).otherwise(0)).alias(f"{c}__{i}"))
    row = df.agg(*aggs).first()
    rows = max(int(row["__rows"]), 1)
    out: dict[str, Any] = {"rows": int(row["__rows"]), "numeric": {}, "categorical": {}}
    for c in numeric:
        out["numeric"][c] = {
            "edges": edges[c],
            "fractions": [row[f"{c}__{i}"] / rows for i in range(len(edges[c]) + 1)],
            "null": row[f"{c}__-1"] / rows,
        }

    pairs = F.explode(
        F.array(*[F.struct(F.lit(c).alias("feature"), F.col(c).cast("string").alias("value")) for c in categorical])
    )
    counts: dict[str, dict[str, int]] = {c: {} for c in categorical}
    for r in df.select(pairs.alias("p")).groupBy("p.feature", "p.value").count().collect():
        counts[r["feature"]][NULL_BIN if r["value"] is None else r["value"]] = int(r["count"])
    for c in categorical:
        if reference is None:
            top = sorted((v for v in counts[c] if v != NULL_BIN), key=lambda v: (-counts[c][v], v))[:MAX_CATEGORIES]
        else:
            top = [v for v in reference["categorical"][c] if v not in (NULL_BIN, OTHER_BIN)]
        keep = set(top)
        hist = {v: counts[c].get(v, 0) / rows for v in top}
        hist[OTHER_BIN] = sum(n for v, n in counts[c].items() if v not in keep and v != NULL_BIN) / rows
        hist[NULL_BIN] = counts[c].get(NULL_BIN, 0) / rows
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
