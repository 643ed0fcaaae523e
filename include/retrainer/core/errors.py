"""Errors that say what kind of failure happened, so runners can treat them differently."""

from __future__ import annotations


class BadData(ValueError):
    """The input data is wrong in a way a retry cannot fix (a malformed header, a misdated row, a failed
    expectation). The message names the file or day, the column and the problem. The DAG fails such a
    task at once instead of retrying it; transient errors (a missing partition, an engine outage) retry."""


class WorkersFailed(RuntimeError):
    """One or more worker processes failed or timed out; the message holds the end of their logs."""
