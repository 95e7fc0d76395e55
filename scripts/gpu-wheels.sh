#!/usr/bin/env bash
# Stage what scripts/gpu-check.sh needs on a lent GPU machine (Python 3.12, no network,
# PyTorch already there): wheels of the missing packages into .whl/ and CIFAR-10 into .data/.
# Both folders are git-ignored; carry them with the run.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl .data
for spec in diffusers==0.42.1 kornia==0.9.0 kornia_rs==0.2.0 pydantic==2.14.4 \
    pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$spec"
done
cp ../shared/data/cifar10/train.parquet .data/cifar10-train.parquet
du -sh .whl .data
