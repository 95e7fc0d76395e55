"""The previous bundled model stays addressable from this repository's history."""

import shutil
import subprocess
from pathlib import Path

import pytest

from diffpath.model.diffusion import PREVIOUS_DEFAULTS, model_fingerprint

ROOT = Path(__file__).resolve().parents[3]


def test_get_model_v1_writes_the_v1_weights(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "get-model-v1.sh"
    has_commit = (
        shutil.which("git")
        and (ROOT / ".git").exists()
        and not subprocess.run(
            ["git", "-C", str(ROOT), "cat-file", "-e", "90e39af^{commit}"], capture_output=True
        ).returncode
    )
    if not has_commit:
        pytest.skip("no git history here (a shallow clone or an sdist): v1 lives in history")
    subprocess.run(["bash", str(script), str(tmp_path / "v1")], check=True, capture_output=True)
    assert model_fingerprint(str(tmp_path / "v1")) in PREVIOUS_DEFAULTS
