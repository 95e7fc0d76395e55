"""Which images belong together (an identity, a source): a reference holds back whole
groups to calibrate, so its threshold holds for groups it never saw, and the audit
resamples them whole."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, model_validator

from diffpath.errors import ConfigError
from diffpath.io.storage import filesystem

__all__ = ["Grouping"]


class Grouping(BaseModel):
    """How images fall into groups (an identity, a source) held back together: a Parquet
    `column`, or `by` their path: "parent" (the folder above each file) or a regular
    expression (its first capture group if it has one, else the whole match)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    column: str | None = None
    by: str | None = None

    @model_validator(mode="after")
    def _one_way(self) -> Grouping:
        if (self.column is None) == (self.by is None):
            raise ValueError("group by a column or by path, not both")
        if self.by not in (None, "parent"):
            try:
                re.compile(self.by)
            except re.error as err:
                reason = f"--group-by {self.by!r} is not a regular expression: {err}"
                raise ValueError(reason) from err
        return self

    def __str__(self) -> str:
        return self.column or self.by or ""

    def labels(self, rows: pa.Table) -> np.ndarray:
        """One group label per row of a table with `uri`, `row` and `path` (a listing or
        feature rows); a `ConfigError` naming the first row that has none."""
        if self.column is not None:
            return _column_labels(rows, self.column)
        paths = rows["path"].to_pylist()
        if self.by == "parent":
            return np.array([str(PurePosixPath(p).parent) for p in paths])
        pattern = re.compile(self.by or "")
        labels = []
        for path in paths:
            match = pattern.search(path)
            if match is None:
                raise ConfigError(
                    f"--group-by {pattern.pattern!r} does not match {path!r}: give a pattern "
                    "every path matches"
                )
            labels.append(match.group(1) if pattern.groups else match.group(0))
        return np.array(labels)


def _column_labels(rows: pa.Table, column: str) -> np.ndarray:
    """The `column` value of each (uri, row), read from its Parquet source (that column)."""
    uris, indices = rows["uri"].to_pylist(), rows["row"].to_pylist()
    if None in indices:
        raise ConfigError(
            f"--group-column needs Parquet sources; {uris[indices.index(None)]} is an image "
            "file: group files with --group-by parent or --group-by REGEX"
        )
    values: dict[str, list] = {}
    for uri in dict.fromkeys(uris):
        fs, path = filesystem(uri)
        schema = pq.read_schema(fs.open(path, "rb"))
        if column not in schema.names:
            raise ConfigError(f"{uri} has no column {column!r} (it has {', '.join(schema.names)})")
        values[uri] = pq.read_table(fs.open(path, "rb"), columns=[column]).column(0).to_pylist()
    return np.array([str(values[u][i]) for u, i in zip(uris, indices, strict=True)])
