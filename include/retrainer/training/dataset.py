"""tf.data input pipelines streamed from Parquet part files, typed by the contract.

Files are read in record batches (never a whole split in memory) through ``from_generator`` with an
explicit signature, then re-batched: the fast path measured on this stack. Missing numeric values
become NaN (the model imputes them); missing strings become "" and integers -1 (out of vocabulary).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrainer.spec.contract import Contract, DType

CHUNK_ROWS = 8192


def arrow_to_inputs(batch: Any, contract: Contract) -> dict[str, np.ndarray]:
    """A pyarrow RecordBatch/Table -> {feature: array of shape [n, 1]} in the serving dtypes."""
    import pyarrow.compute as pc

    out: dict[str, np.ndarray] = {}
    for c in contract.features:
        col = batch.column(c.name)
        if c.dtype == DType.STRING:
            arr = pc.fill_null(col, "").to_numpy(zero_copy_only=False).astype(object)
        elif c.dtype == DType.INT64:
            arr = pc.fill_null(col, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        else:
            arr = col.to_numpy(zero_copy_only=False).astype(np.float32)
        out[c.name] = arr.reshape(-1, 1)
    return out


def labels(batch: Any, contract: Contract) -> np.ndarray:
    return batch.column(contract.label.name).to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, 1)


DateRange = tuple[str, str]  # [first day, end day) as ISO dates


def iter_record_batches(
    files: Sequence[str | Path],
    contract: Contract,
    chunk_rows: int = CHUNK_ROWS,
    rng: np.random.Generator | None = None,
    days: DateRange | None = None,
) -> Iterator[Any]:
    """pyarrow RecordBatches of the contract's features and label; with ``rng`` the file order is shuffled;
    with ``days`` only the rows whose date (the contract's date column) is in that range."""
    import pyarrow.parquet as pq

    order = [str(f) for f in files]
    if rng is not None:
        rng.shuffle(order)
    columns = [c.name for c in contract.features] + [contract.label.name]
    if days is None:
        for f in order:
            yield from pq.ParquetFile(f).iter_batches(batch_size=chunk_rows, columns=columns)
        return
    date_column = contract.table.date_column
    for f in order:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=chunk_rows, columns=[*columns, date_column]):
            kept = batch.filter(_in_days(batch.column(date_column), days)).select(columns)
            if kept.num_rows:
                yield kept


def _in_days(dates: Any, days: DateRange) -> Any:
    import datetime as dt

    import pyarrow as pa
    import pyarrow.compute as pc

    start, end = (pa.scalar(dt.date.fromisoformat(d), dates.type) for d in days)
    return pc.and_(pc.greater_equal(dates, start), pc.less(dates, end))


def count_rows(files: Sequence[str | Path], contract: Contract, days: DateRange) -> int:
    """Rows dated in ``days``, reading only the date column."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    date_column = contract.table.date_column
    total = 0
    for f in files:
        for batch in pq.ParquetFile(str(f)).iter_batches(batch_size=65536, columns=[date_column]):
            total += pc.sum(_in_days(batch.column(date_column), days)).as_py() or 0
    return total


def iter_chunks(
    files: Sequence[str | Path],
    contract: Contract,
    chunk_rows: int = CHUNK_ROWS,
    rng: np.random.Generator | None = None,
    days: DateRange | None = None,
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """(inputs, labels) per record batch; with ``rng``, file order and rows within a chunk are shuffled."""
    for batch in iter_record_batches(files, contract, chunk_rows, rng, days):
        x, y = arrow_to_inputs(batch, contract), labels(batch, contract)
        if rng is not None:
            perm = rng.permutation(len(y))
            x = {k: v[perm] for k, v in x.items()}
            y = y[perm]
        yield x, y


def output_signature(contract: Contract) -> tuple[dict[str, Any], Any]:
    import tensorflow as tf

    feats = {
        name: tf.TensorSpec(shape=(None, 1), dtype=getattr(tf, dtype))
        for name, dtype in contract.serving_dtypes().items()
    }
    return feats, tf.TensorSpec(shape=(None, 1), dtype=tf.float32)


def make_dataset(
    files: Sequence[str | Path],
    contract: Contract,
    batch_size: int,
    *,
    seed: int | None = None,
    repeat: bool = False,
    days: DateRange | None = None,
) -> Any:
    """Batches of ``batch_size`` rows; ``seed`` shuffles differently on every pass, ``repeat`` loops forever,
    ``days`` keeps only the rows of those days."""
    import tensorflow as tf

    if not files:
        raise ValueError("no input files for this input pipeline (fewer part files than workers?)")
    passes = iter(range(1 << 30))

    def gen() -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        rng = np.random.default_rng([seed, next(passes)]) if seed is not None else None
        yield from iter_chunks([str(f) for f in files], contract, rng=rng, days=days)

    ds = tf.data.Dataset.from_generator(gen, output_signature=output_signature(contract))
    if repeat:
        ds = ds.repeat()
    return ds.rebatch(batch_size).prefetch(tf.data.AUTOTUNE)
