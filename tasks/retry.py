"""Retry policy: retry transient I/O failures, never errors that a rerun cannot fix."""

from __future__ import annotations

from diffpath.errors import ConfigError, DecodeError, ModelError


def is_transient(task, task_run, state) -> bool:
    """Prefect `retry_condition_fn`: False for config, decode and model errors and for
    missing inputs (a retry would fail the same way), True for other exceptions."""
    try:
        state.result()
    except (ConfigError, DecodeError, ModelError, FileNotFoundError):
        return False
    except Exception as err:
        return "does not exist" not in str(err)
    return False
