#!/usr/bin/env bash
# The prepared GPU check: one command, under 8 minutes on one GPU; on a CPU it runs small
# sizes. Prints how features on this device agree with the CPU's, then the throughput table
# (benchmarks/throughput.py), saved as OUT_DIR/throughput.json. Base-model training on a
# GPU is scripts/gpu-train.sh.
#
#   scripts/gpu-check.sh [OUT_DIR]
#
# The lent GPU machines have no network and lack some packages: first run
# scripts/gpu-wheels.sh here (wheels into .whl/, data into .data/), carry both.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu-check}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
if ! python3 -c "from importlib.metadata import version; version('diffpath')" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-build-isolation -e .
fi
data_dir=../shared/data
if [ -d .data ]; then data_dir=.data; fi
python3 - <<'PY'
import torch
print(f"torch {torch.__version__}; CUDA {torch.cuda.is_available()}"
      + (f": {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
PY
data=""
for candidate in "$data_dir/cifar10/train.parquet" "$data_dir/cifar10/test.parquet"; do
  if [ -f "$candidate" ]; then data="--data $candidate"; break; fi
done
python3 benchmarks/device_agreement.py $data
python3 benchmarks/throughput.py $data --json "$out/throughput.json"
