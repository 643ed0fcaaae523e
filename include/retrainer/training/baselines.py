"""Reference models a new user would try first (scikit-learn), trained on the same training rows and
scored on the same evaluation rows as the TensorFlow model, so every run shows whether the network
earns its weight.

Which estimators is the objective's choice (:meth:`Objective.baselines`). Rows are streamed from the
Parquet parts; at most ``max_rows`` training rows are kept (an even stride over the whole split, so
memory stays bounded however long the window), and the sample's size is reported with the metrics.
String categories are coded by the run's own vocabularies (unknown values are missing), small integer categories
keep their values, numeric columns keep their nulls: gradient boosting handles both natively, and is fitted
twice, every category native and the ordered ones as numbers (:class:`FeatureCoder` says why); the linear model
imputes and one-hot encodes in its own pipeline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrainer.spec.contract import Contract, Role
from retrainer.spec.objectives import Objective
from retrainer.training.dataset import iter_record_batches, labels

log = logging.getLogger(__name__)
MAX_ROWS = 400_000
MAX_CODE = 255  # scikit-learn's native categorical support takes codes below its bin count


class FeatureCoder:
    """Contract + the run's statistics -> a float matrix: numeric values as they are, string categories as their
    index in the run's vocabulary (NaN when missing or unseen), integer categories (month, weekday, hour) as the
    integers themselves when they are small enough to be codes (else as their vocabulary index).

    Two masks: ``categorical`` (every categorical column) and ``unordered`` (the string ones). Gradient boosting
    is fitted both ways, every category native, and the ordered (integer) ones as numbers, because neither wins
    everywhere: a long window evaluated on days whose value of an ordered category is rare in training (the
    last weeks of a year, say) gets that value learnt as a category of its own from a few days by the first,
    and placed beside its neighbours by the second; the measurements are in the docs (Training, "Is the network
    worth it?"). Reporting only the first made the network look better than it is.
    """

    def __init__(self, contract: Contract, stats: dict[str, Any]) -> None:
        from retrainer.spec.contract import DType

        self.columns = [c for c in contract.features]
        self.categorical = [c.role == Role.CATEGORICAL for c in self.columns]
        self.unordered = [c.role == Role.CATEGORICAL and c.dtype == DType.STRING for c in self.columns]
        import pyarrow as pa

        def as_integers(c: Any) -> bool:  # small non-negative integers are usable as codes as they are
            return c.dtype == DType.INT64 and all(0 <= int(v) < MAX_CODE for v in stats["vocabulary"][c.name])

        self._vocab = {
            c.name: pa.array([str(v) for v in stats["vocabulary"][c.name]], pa.string())
            for c in self.columns
            if c.role == Role.CATEGORICAL and not as_integers(c)
        }

    def encode(self, batch: Any) -> np.ndarray:
        import pyarrow as pa
        import pyarrow.compute as pc

        out = np.empty((batch.num_rows, len(self.columns)), dtype=np.float64)
        for j, c in enumerate(self.columns):
            col = batch.column(c.name)
            if c.name in self._vocab:
                col = pc.index_in(col.cast(pa.string()), value_set=self._vocab[c.name])
            out[:, j] = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)  # nulls -> NaN
        return out


def _batches(files: Sequence[str | Path], contract: Contract, coder: FeatureCoder) -> Iterator[tuple[Any, Any]]:
    for batch in iter_record_batches(files, contract):
        yield coder.encode(batch), labels(batch, contract).reshape(-1)


def training_sample(
    files: Sequence[str | Path], contract: Contract, coder: FeatureCoder, rows: int, max_rows: int = MAX_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """Every k-th training row, k chosen so that at most ``max_rows`` are kept (all rows when fewer)."""
    stride = max(1, -(-rows // max_rows))
    xs, ys, seen = [], [], 0
    for x, y in _batches(files, contract, coder):
        keep = (np.arange(seen, seen + len(y)) % stride) == 0
        xs.append(x[keep])
        ys.append(y[keep])
        seen += len(y)
    if not xs:
        raise ValueError("no training rows for the baselines")
    return np.concatenate(xs), np.concatenate(ys)


def describe(objective: Objective, *, max_rows: int = MAX_ROWS) -> dict[str, Any]:
    """What decides the baselines besides their rows and seed: the code that declares and fits them (this
    module's and the objective's source), scikit-learn's version and the row cap. Part of the key under which a
    run keeps their metrics; it imports nothing (scikit-learn's import alone is 1.5 s, which a run reusing its
    baselines does not pay)."""
    import hashlib
    import importlib.metadata
    import inspect

    code = hashlib.sha256()
    for source in (__file__, inspect.getfile(type(objective))):
        code.update(Path(source).read_bytes())
    return {"code": code.hexdigest(), "sklearn": importlib.metadata.version("scikit-learn"), "max_rows": max_rows}


def fit_and_score(
    train_files: Sequence[str | Path],
    eval_files: Sequence[str | Path],
    contract: Contract,
    objective: Objective,
    stats: dict[str, Any],
    *,
    seed: int = 42,
    max_rows: int = MAX_ROWS,
) -> dict[str, dict[str, Any]]:
    """{baseline name: evaluation metrics (the objective's) + ``train_rows`` and ``fit_seconds``}."""
    coder = FeatureCoder(contract, stats)
    x, y = training_sample(train_files, contract, coder, int(stats["rows"]), max_rows)
    sample_rows = len(y)
    fitted = {}
    for name, make in objective.baselines(coder.categorical, seed, coder.unordered).items():
        t0 = time.perf_counter()
        fitted[name] = (make().fit(x, y), time.perf_counter() - t0)
    del x, y
    metrics = {name: objective.eval_metrics() for name in fitted}
    for xe, ye in _batches(eval_files, contract, coder):
        for name, (model, _) in fitted.items():
            metrics[name].update(ye, objective.baseline_predict(model, xe))
    out = {}
    for name, (_, seconds) in fitted.items():
        out[name] = metrics[name].result() | {"train_rows": sample_rows, "fit_seconds": round(seconds, 2)}
        log.info("baseline %s: %s (fit %.1f s)", name, objective.describe(out[name]), seconds)
    return out
