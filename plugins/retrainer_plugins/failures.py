"""How retrainer's errors become Airflow task outcomes: one mapping for every task and sensor."""

from __future__ import annotations

import contextlib
from collections.abc import Generator


@contextlib.contextmanager
def no_retry_on_bad_data() -> Generator[None, None, None]:
    """Bad input data (and a bad conf) does not get better on retry: fail the task at once, naming it.
    Everything else propagates, so transient errors still use the task's retries."""
    from airflow.sdk.exceptions import AirflowFailException

    from retrainer.core.config import ConfigError
    from retrainer.core.errors import BadData

    try:
        yield
    except (BadData, ConfigError) as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
