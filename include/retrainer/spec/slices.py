"""The slices a workload declares: how evaluation cuts its rows to compare models part by part
(:mod:`retrainer.evaluation.slices` computes and gates; this module only declares, and imports nothing heavy, so a
workload module and the DAG files that name one stay cheap to import)."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class SliceSpec:
    """A way to cut the evaluation rows, declared by the workload: by the values of ``column``, or by ``groups``
    (label -> the column's values it covers; a value in no group is in no slice of this spec)."""

    name: str
    column: str
    groups: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def labels(self, values: Any) -> Any:
        """The slice label of each row (None for a row in no group), as a numpy object array."""
        import numpy as np

        if not self.groups:
            return np.asarray([None if v is None else str(v) for v in values], dtype=object)
        of = {value: label for label, members in self.groups for value in members}
        return np.asarray([of.get(v.item() if hasattr(v, "item") else v) for v in values], dtype=object)
