"""Retry policy for Prefect tasks: only transient storage failures, with backoff."""

from __future__ import annotations

from diffpath.io.storage import is_transient

RETRY = {"retries": 3, "retry_delay_seconds": [2, 10, 30]}


def transient_failure(task, task_run, state) -> bool:
    """Prefect `retry_condition_fn`: retry when the failure is transient (`is_transient`)."""
    try:
        state.result()
    except Exception as err:
        return is_transient(err)
    return False
