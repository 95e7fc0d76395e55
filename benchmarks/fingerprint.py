"""Fingerprint every number a refactor must leave alone: the demo's scores, the bundled
model's features of shared-data images, and a small benchmark's outputs.

    python benchmarks/fingerprint.py --out runs/fingerprint-before.json   # on the old commit
    python benchmarks/fingerprint.py --out runs/fingerprint-after.json    # on the new one
    diff runs/fingerprint-before.json runs/fingerprint-after.json         # must be empty

Everything goes through the public API and the CLI, so it runs unchanged across layouts.
Features and scores are hashed bit for bit; shared data from $DIFFPATH_DATA (default
../shared/data); ~6 min on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DIFFPATH_DATA", ROOT.parent / "shared" / "data"))
SAMPLES = ROOT / "diffpath" / "assets" / "samples"
SPEC = """
name: fingerprint
baseline: diffpath1d
datasets:
  faces: {{source: {samples}/reference.parquet}}
  mixed: {{source: {samples}/incoming.parquet}}
  cifar10: {{source: {data}/cifar10/test.parquet}}
sizes: {{fit: 80, validation: 40, test: 30}}
bootstrap: 100
methods:
  v2+6d: {{config: {{method: diffpathv2+6d, timesteps: 3, draws: 1}}}}
  diffpath1d: {{config: {{method: diffpath1d, timesteps: 3}}}}
ablations:
  v2-gaussian: {{config: {{method: diffpathv2, timesteps: 3}}, density: gaussian}}
audit: {{clean: faces, contaminants: [cifar10], rates: [0.0, 0.2]}}
"""


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def _cli(*args: str, home: str) -> str:
    env = {**os.environ, "PREFECT_HOME": home}
    done = subprocess.run(
        [sys.executable, "-m", "diffpath_flows.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode not in (0, 3):
        raise SystemExit(f"diffpath {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


def _table_digests(folder: Path) -> dict[str, str]:
    """Every numeric column of every Parquet table under folder, hashed (timings left out)."""
    digests = {}
    for path in sorted(folder.rglob("*.parquet")):
        rel = str(path.relative_to(folder))
        if rel.startswith(("features/", "shards/", "listings/")):
            continue
        table = pq.read_table(path)
        for name in table.column_names:
            column = table[name].to_numpy(zero_copy_only=False)
            if column.dtype.kind in "fiub" and "seconds" not in name:
                digests[f"{rel}:{name}"] = _digest(column)
    return digests


def features_digest() -> dict[str, str]:
    from diffpath import FeatureConfig, decode_images, extract_features, load_model

    config = FeatureConfig()
    model = load_model("default", dtype=config.torch_dtype, device="cpu")
    out = {}
    for name, crop in {"celeba/test": 140, "cifar10/test": None, "svhn/test": None}.items():
        blobs = pq.read_table(DATA / f"{name}.parquet", columns=["image"])["image"][:24]
        items = [(str(i), blob) for i, blob in enumerate(blobs.to_pylist())]
        images, _, _ = decode_images(items, config.image_size, center_crop=crop)
        hashes = [hashlib.sha256(blob).hexdigest() for _, blob in items]
        out[name] = _digest(extract_features(model, images, hashes, config))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fingerprint-"))
    result: dict[str, object] = {"features": features_digest()}
    demo = _cli("demo", "--out", str(work / "demo"), "--device", "cpu", home=str(work / "h1"))
    result["demo_auroc"] = [line for line in demo.splitlines() if line.startswith("AUROC")]
    result["demo"] = _table_digests(work / "demo" / "screen")
    spec = work / "spec.yaml"
    spec.write_text(SPEC.format(samples=SAMPLES, data=DATA))
    _cli("benchmark", str(spec), "--out", str(work / "bench"), "--ablations", home=str(work / "h2"))
    result["benchmark"] = _table_digests(work / "bench")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(json.dumps(result, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
