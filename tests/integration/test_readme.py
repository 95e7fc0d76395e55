"""The README's Python code runs as written, on the bundled model and samples."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_readme_has_python_to_run() -> None:
    assert BLOCKS


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(block: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # where the example writes its outputs
    namespace: dict = {"__name__": "readme"}
    exec(compile(block, str(README), "exec"), namespace)
    if "result" in namespace:  # the API example: every incoming image scored, files written
        scores = namespace["result"].scores
        assert len(scores) > 0 and np.isfinite(scores["score"].to_numpy()).all()
        assert (Path("screen-out") / "flagged.txt").exists()
