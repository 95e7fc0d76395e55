"""The built wheel, installed into a fresh virtualenv, runs the demo beside a user's own
`tasks.py` and `flows.py`: our flows and tasks install under names only we own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STRAY = "raise ImportError('a stray {name}.py shadowed the installed diffpath')\n"


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.hostile(
    (
        "a user's own `tasks.py` and `flows.py` on sys.path beside the installed wheel",
        "the demo runs: the package's own modules are diffpath_tasks and diffpath_flows",
    )
)
def test_the_wheel_runs_the_demo_beside_a_stray_tasks_module(tmp_path) -> None:
    source = shutil.copytree(
        ROOT,
        tmp_path / "src",
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "runs", "build", "*.egg-info", "__pycache__", "tests"
        ),
    )
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*build, "-w", str(wheels), str(source)], check=True)
    (wheel,) = wheels.glob("diffpath-*.whl")
    top_level = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {"diffpath", "diffpath_flows", "diffpath_tasks"} <= top_level
    assert not {"flows", "tasks"} & top_level

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # the dependencies come from this environment (nothing is downloaded); its .pth files,
    # among them this checkout's editable install, are not read from a path added this way
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)]
    subprocess.run(pip, check=True)

    user = tmp_path / "user"
    user.mkdir()
    for name in ("tasks", "flows"):
        (user / f"{name}.py").write_text(STRAY.format(name=name))
    env = {
        **os.environ,
        "PYTHONPATH": str(user),  # the user's modules come first on sys.path
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
    }
    env.pop("PREFECT_API_URL", None)
    demo = subprocess.run(
        [venv / "bin" / "diffpath", "demo", "--out", str(tmp_path / "demo")],
        cwd=user,
        env=env,
        capture_output=True,
        text=True,
    )
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "AUROC faces vs. CIFAR-10 + textures" in demo.stdout + demo.stderr
    where = subprocess.run(
        [python, "-c", "import diffpath_flows; print(diffpath_flows.__file__)"],
        cwd=user,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(site), where  # the wheel's, not this checkout's
