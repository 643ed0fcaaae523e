"""Evaluation's plots: the pictures an operator checks before trusting a number.

For a classifier: ROC and precision-recall curves and a calibration (reliability) plot, the new model and
the champion on the same rows; for a regression: predicted against actual by decile and the residuals'
histogram; for both: the headline metric by slice with its 95 % interval. PNG files, written by ``evaluate``
from the rows it already holds (no second pass over the files), then logged to the MLflow run and shown in
the run's report. Matplotlib's Agg backend: no display, no GUI toolkit, safe in a worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from retrainer.evaluation.slices import KeptRows

NEW, CHAMPION = "#1f77b4", "#ff7f0e"  # the same two colours in every plot
CALIBRATION_BINS = 10


def _figure(title: str) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.2), dpi=100)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    return fig, ax


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def _models(new: np.ndarray, champion: np.ndarray | None, label: str) -> list[tuple[str, np.ndarray, str]]:
    out = [("new model", new, NEW)]
    if champion is not None:
        out.append((label, champion, CHAMPION))
    return out


def roc(y: np.ndarray, models: list[tuple[str, np.ndarray, str]], path: Path) -> Path:
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = _figure("ROC")
    for name, p, colour in models:
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, color=colour, label=f"{name} (AUC {roc_auc_score(y, p):.4f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate")
    ax.legend(loc="lower right", fontsize=9)
    return _save(fig, path)


def precision_recall(y: np.ndarray, models: list[tuple[str, np.ndarray, str]], path: Path) -> Path:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig, ax = _figure("Precision-recall")
    for name, p, colour in models:
        precision, recall, _ = precision_recall_curve(y, p)
        ax.plot(recall, precision, color=colour, label=f"{name} (AP {average_precision_score(y, p):.4f})")
    ax.axhline(float(np.mean(y)), color="grey", linestyle=":", linewidth=1, label=f"base rate {np.mean(y):.3f}")
    ax.set(xlabel="recall", ylabel="precision", ylim=(0, 1.02))
    ax.legend(loc="upper right", fontsize=9)
    return _save(fig, path)


def calibration(y: np.ndarray, models: list[tuple[str, np.ndarray, str]], path: Path) -> Path:
    """Mean predicted probability against the observed rate, in bins of equal rows (quantiles)."""
    fig, ax = _figure("Calibration")
    for name, p, colour in models:
        edges = np.unique(np.quantile(p, np.linspace(0, 1, CALIBRATION_BINS + 1)))
        which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
        bins = [b for b in range(len(edges) - 1) if np.any(which == b)]
        ax.plot([p[which == b].mean() for b in bins], [y[which == b].mean() for b in bins], "o-", color=colour,
                label=name)  # fmt: skip
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfectly calibrated")
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=9)
    return _save(fig, path)


def predicted_vs_actual(y: np.ndarray, models: list[tuple[str, np.ndarray, str]], path: Path, unit: str) -> Path:
    """Mean actual against mean prediction, in deciles of the prediction."""
    fig, ax = _figure("Predicted vs actual (deciles)")
    for name, p, colour in models:
        order = np.argsort(p)
        parts = np.array_split(order, 10)
        ax.plot([p[i].mean() for i in parts], [y[i].mean() for i in parts], "o-", color=colour, label=name)
    low, high = float(np.min(y)), float(np.max(y))
    ax.plot([low, high], [low, high], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel=f"mean prediction {unit}".strip(), ylabel=f"mean actual {unit}".strip())
    ax.legend(loc="upper left", fontsize=9)
    return _save(fig, path)


def residuals(y: np.ndarray, models: list[tuple[str, np.ndarray, str]], path: Path, unit: str) -> Path:
    fig, ax = _figure("Residuals (prediction - actual)")
    for name, p, colour in models:
        ax.hist(p - y, bins=60, alpha=0.5, color=colour, label=name)
    ax.set(xlabel=f"residual {unit}".strip(), ylabel="rows")
    ax.legend(loc="upper right", fontsize=9)
    return _save(fig, path)


def by_slice(report: dict[str, Any], path: Path) -> Path:
    """The headline per gated slice with its 95 % interval: new model beside the champion; a slice that held
    the run in red."""
    rows = [s for s in report["slices"] if s["gated"] and s.get("new") is not None]
    fig, ax = _figure(f"{report['headline']} by slice (95 % intervals)")
    fig.set_size_inches(7.5, max(3.0, 0.32 * len(rows) + 1.2))
    ypos = np.arange(len(rows))
    has_champion = any(s.get("champion") is not None for s in rows)
    step = 0.2 if has_champion else 0.0

    def bars(key: str, colour: str, offset: float, label: str) -> None:
        values = np.array([s.get(key) if s.get(key) is not None else np.nan for s in rows], dtype=float)
        intervals = [s.get(f"{key}_interval") or [v, v] for s, v in zip(rows, values, strict=True)]
        err = np.array([[v - lo, hi - v] for v, (lo, hi) in zip(values, intervals, strict=True)]).T
        ax.errorbar(values, ypos + offset, xerr=np.clip(err, 0, None), fmt="o", color=colour, capsize=3, label=label)

    bars("new", NEW, -step, "new model")
    if has_champion:
        bars("champion", CHAMPION, step, "champion")
    ax.set_yticks(ypos, [f"{s['slice']}={s['value']} ({s['rows']})" for s in rows], fontsize=8)
    for tick, s in zip(ax.get_yticklabels(), rows, strict=True):
        if s.get("holds"):
            tick.set_color("red")
    ax.invert_yaxis()
    ax.set_xlabel(report["headline"])
    ax.legend(loc="best", fontsize=9)
    return _save(fig, path)


def write_plots(
    objective_name: str, unit: str, rows: KeptRows, champion_p: np.ndarray | None, report: dict[str, Any],
    folder: Path, champion_label: str = "champion",
) -> list[Path]:  # fmt: skip
    """Every plot of the objective into ``folder`` (created); returns the files in the order a reader wants them."""
    folder.mkdir(parents=True, exist_ok=True)
    y, models = rows.y, _models(rows.p, champion_p, champion_label)
    if len(y) == 0:
        return []
    if objective_name == "binary_classification":
        out = []
        if 0 < y.sum() < len(y):  # curves need both classes
            out += [roc(y, models, folder / "roc.png"), precision_recall(y, models, folder / "precision_recall.png")]
        out.append(calibration(y, models, folder / "calibration.png"))
    else:
        out = [predicted_vs_actual(y, models, folder / "predicted_vs_actual.png", unit),
               residuals(y, models, folder / "residuals.png", unit)]  # fmt: skip
    if report and report.get("slices"):
        out.append(by_slice(report, folder / "by_slice.png"))
    return out
