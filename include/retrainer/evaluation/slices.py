"""Sliced evaluation: the headline metric with a bootstrap interval, overall and per slice, and the slice gate.

Why: an overall gain can hide a loss concentrated on one part of the traffic. A challenger that is better on
average and much worse for one airport or one carrier would be promoted by the overall rule alone, and the
people it serves worse would be the first to notice. So evaluation keeps the rows it scored (the evaluation
days only: memory bounded by ``eval_days``, not by the window), splits them by the slices the workload
declares, and compares the new model with the champion slice by slice on the same rows.

- Each figure carries a percentile bootstrap interval (resampled evaluation rows; the same resamples for both
  models, so the difference's interval is paired). The interval is reported, the gate reads point estimates:
  an operator can predict what it will do from the numbers on the page.
- A slice with fewer rows than ``slice_min_rows`` (or, for a classifier, without both classes) is reported and
  never gated: its metric is too noisy to hold a model on.
- A gated slice holds the run when the new model is worse than the champion there by more than
  ``max_slice_drop``, a fraction of the champion's value in the metric's own direction (AUC 0.70 -> 0.66 is a
  drop of 5.7 %; RMSE 40 -> 42 minutes, 5 %): one setting that means the same for every objective.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np

from retrainer.spec.slices import SliceSpec

OVERALL = "overall"
CHUNK_RESAMPLES = 50  # resamples computed together: memory is this many copies of the evaluation rows


class KeptRows:
    """The rows scored on the evaluation days: label, each model's prediction and the slice columns, appended
    batch by batch while the streaming metrics are updated (no second pass over the files)."""

    def __init__(self, specs: tuple[SliceSpec, ...]) -> None:
        self.specs = specs
        self._y: list[np.ndarray] = []
        self._p: list[np.ndarray] = []
        self._columns: dict[str, list[np.ndarray]] = {s.column: [] for s in specs}

    def add(self, batch: Any, y: np.ndarray, p: np.ndarray) -> None:
        self._y.append(np.asarray(y, dtype=np.float64).reshape(-1))
        self._p.append(np.asarray(p, dtype=np.float64).reshape(-1))
        for column, parts in self._columns.items():
            parts.append(batch.column(column).to_numpy(zero_copy_only=False))

    @property
    def y(self) -> np.ndarray:
        return np.concatenate(self._y) if self._y else np.zeros(0)

    @property
    def p(self) -> np.ndarray:
        return np.concatenate(self._p) if self._p else np.zeros(0)

    def column(self, name: str) -> np.ndarray:
        parts = self._columns[name]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=object)


def auc_weighted(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Exact ROC AUC (the Mann-Whitney statistic, ties counted half) of predictions ``p`` against 0/1 labels
    ``y`` (both shape [n]) for each row of ``weights`` (shape [B, n]: how often each row is drawn; a row of
    ones is the plain AUC). Sorted once, then linear per resample: a bootstrap costs B weighted sums, not B
    sorts. NaN where a resample lacks a class."""
    order = np.argsort(p, kind="stable")
    p_sorted, positive = p[order], y[order] > 0.5
    w = weights[:, order].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, p_sorted[1:] != p_sorted[:-1]])  # groups of tied predictions
    pos = np.add.reduceat(w * positive, starts, axis=1)
    neg = np.add.reduceat(w * ~positive, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negatives ranked strictly lower than each group
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))


def rmse_weighted(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Root mean squared error of ``p`` against ``y`` for each row of ``weights`` (see :func:`auc_weighted`)."""
    return np.sqrt((weights * (p - y) ** 2).sum(axis=1) / weights.sum(axis=1))


HEADLINE = {"auc": auc_weighted, "rmse": rmse_weighted}  # the objectives' headline metrics, weighted


@dataclasses.dataclass(frozen=True)
class GateSettings:
    min_rows: int
    max_drop: float  # a fraction of the champion's value
    resamples: int
    seed: int


def _resamples(n: int, settings: GateSettings) -> Iterator[np.ndarray]:
    """Bootstrap resamples of ``n`` rows as draw counts (shape [chunk, n]), a chunk at a time."""
    rng = np.random.default_rng(settings.seed)
    left = settings.resamples
    while left > 0:
        take = min(CHUNK_RESAMPLES, left)
        draws = rng.integers(0, n, size=(take, n)) + np.arange(take)[:, None] * n  # row r's draws, offset r * n
        yield np.bincount(draws.ravel(), minlength=take * n).reshape(take, n)
        left -= take


def _interval(values: list[np.ndarray]) -> list[float] | None:
    """The central 95 % of the bootstrap values (resamples with one class only are left out)."""
    v = np.concatenate(values)
    v = v[np.isfinite(v)]
    return [round(float(np.quantile(v, 0.025)), 6), round(float(np.quantile(v, 0.975)), 6)] if len(v) else None


def _one(
    headline: str, higher: bool, y: np.ndarray, new: np.ndarray, champion: np.ndarray | None, settings: GateSettings
) -> dict[str, Any]:
    """Point estimates and intervals of one set of rows."""
    metric = HEADLINE[headline]
    out: dict[str, Any] = {"rows": int(len(y))}
    if headline == "auc":
        out["positives"] = int(y.sum())
    if len(y) == 0:
        return out
    once = np.ones((1, len(y)))
    value = float(metric(y, new, once)[0])
    out["new"] = round(value, 6) if np.isfinite(value) else None
    boot_new: list[np.ndarray] = []
    boot_champion: list[np.ndarray] = []
    for counts in _resamples(len(y), settings):
        boot_new.append(metric(y, new, counts))
        if champion is not None:
            boot_champion.append(metric(y, champion, counts))
    out["new_interval"] = _interval(boot_new)
    if champion is not None:
        value = float(metric(y, champion, once)[0])
        out["champion"] = round(value, 6) if np.isfinite(value) else None
        out["champion_interval"] = _interval(boot_champion)
        sign = 1.0 if higher else -1.0
        out["gain_interval"] = _interval([sign * (a - b) for a, b in zip(boot_new, boot_champion, strict=True)])
        if out["new"] is not None and out["champion"] is not None:
            gain = sign * (out["new"] - out["champion"])
            out["gain"] = round(gain, 6)
            out["drop"] = round(max(0.0, -gain) / abs(out["champion"]), 6) if out["champion"] else None
    return out


def sliced(
    headline: str,
    higher_is_better: bool,
    rows: KeptRows,
    champion_p: np.ndarray | None,
    settings: GateSettings,
) -> dict[str, Any]:
    """The headline overall and per slice for the new model (``rows.p``) and, if given, the champion's
    predictions on the same rows; each slice marked ``gated`` (big enough to hold a run) and ``holds`` (a
    gated slice whose drop exceeds ``max_drop``). JSON-ready: it goes into the evaluation result as is."""
    y, new = rows.y, rows.p
    if champion_p is not None and len(champion_p) != len(y):
        raise ValueError(f"{len(champion_p)} champion predictions for {len(y)} evaluation rows")
    overall = _one(headline, higher_is_better, y, new, champion_p, settings)
    by: list[dict[str, Any]] = []
    for spec in rows.specs:
        labels = spec.labels(rows.column(spec.column))
        for label in sorted({v for v in labels if v is not None}):
            mask = labels == label
            row = _one(headline, higher_is_better, y[mask], new[mask],
                       None if champion_p is None else champion_p[mask], settings)  # fmt: skip
            both_classes = headline != "auc" or 0 < row["positives"] < row["rows"]
            row = {"slice": spec.name, "value": label, **row}
            row["gated"] = bool(row["rows"] >= settings.min_rows and both_classes)
            row["holds"] = bool(row["gated"] and row.get("drop") is not None and row["drop"] > settings.max_drop)
            by.append(row)
    return {
        "headline": headline,
        "min_rows": settings.min_rows,
        "max_drop": settings.max_drop,
        "resamples": settings.resamples,
        OVERALL: overall,
        "slices": by,
    }


def holding(report: dict[str, Any]) -> list[str]:
    """One line per slice that holds the run: which slice, both values and the drop against the bar."""
    if not report:
        return []
    name = report["headline"]
    return [
        f"{s['slice']}={s['value']} ({s['rows']} rows): {name} {s['new']:.4f} vs champion {s['champion']:.4f}, "
        f"a drop of {s['drop']:.1%} > max_slice_drop {report['max_drop']:.1%}"
        for s in report.get("slices", [])
        if s.get("holds")
    ]
