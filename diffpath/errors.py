"""The project's error tree: every failure a user can cause is one of these."""

from __future__ import annotations

__all__ = [
    "AlertError",
    "ConfigError",
    "ConfigMismatchError",
    "DecodeError",
    "DiffPathError",
    "ModelError",
    "NotFittedError",
    "StorageError",
]


class DiffPathError(Exception):
    """Root of every error diffpath raises on purpose."""


class ConfigError(DiffPathError, ValueError):
    """A configuration value is invalid."""


class ConfigMismatchError(ConfigError):
    """Two artefacts (features, fitted model, scores) come from different feature configs."""


class DecodeError(DiffPathError, ValueError):
    """Image bytes could not be decoded; the message names the image key."""


class StorageError(DiffPathError, OSError):
    """A storage URI could not be read or written."""


class ModelError(DiffPathError):
    """A diffusion model could not be found or loaded."""


class NotFittedError(DiffPathError, ValueError):
    """A density model was used before `fit`."""


class AlertError(DiffPathError):
    """A run finished and wrote its outputs, but they call for a person: the reasons, and
    the outputs' URIs (dates resolved) so that the caller can show them."""

    def __init__(self, reasons: list[str], outputs: dict[str, str] | None = None) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons
        self.outputs = outputs or {}

    def __reduce__(self) -> tuple:
        return type(self), (self.reasons, self.outputs)
