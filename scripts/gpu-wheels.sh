#!/usr/bin/env bash
# Stage what scripts/gpu-check.sh needs on a lent GPU machine (Python 3.12, no network,
# PyTorch already there): wheels of the missing packages into .whl/ and images into .data/
# (the layout of ../shared/data). Default: CIFAR-10 train for the throughput table; with
# --train: subsets of every shared set for the warm start instead (a call carries 64 MiB).
# Both folders are git-ignored; carry them with the run.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .data && mkdir -p .whl .data
for spec in diffusers==0.42.1 kornia==0.9.0 kornia_rs==0.2.0 pydantic==2.14.4 \
    pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$spec"
done
if [ "${1:-}" = "--train" ]; then
  .venv/bin/python - <<'PY'
from pathlib import Path
import pyarrow.parquet as pq
rows = {"celeba/train": 1600, "celeba/test": 400, "cifar10/test": 4000,
        "dtd/all": 300, "tinyimagenet32/val": 4000}
for name, n in rows.items():
    target = Path(".data") / f"{name}.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pq.read_table(f"../shared/data/{name}.parquet").slice(0, n), target)
PY
else
  mkdir -p .data/cifar10 && cp ../shared/data/cifar10/train.parquet .data/cifar10/
fi
du -sh .whl .data
