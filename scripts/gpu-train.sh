#!/usr/bin/env bash
# Train base-model candidates on one lent GPU: two runs at once (an H200 has room for both),
# recipes/v2-gpu-warm.yaml (the bundled model warm-started) and recipes/v2-gpu-large.yaml
# (~36M parameters from scratch). Every minute each run writes its EMA weights, history,
# loss plot and samples to OUT_DIR/<candidate>/ (checkpoints stay on the machine's disk);
# at the end it prints the denoising-loss table (benchmarks/memorisation.py).
#
#   scripts/gpu-wheels.sh --faces                      # here: wheels + 32x32 faces (~31 MiB)
#   scripts/gpu-train.sh [--minutes N] [--small] [OUT_DIR]   # there, carry .whl and .data
#
# N defaults to 8, which with start-up and the table fits 10 device minutes. On a CPU the
# same script is a trial: `scripts/gpu-train.sh --minutes 1 --small /tmp/trial` (a few
# steps; --small draws 4 samples and measures the table on 32 faces, not 64 and 512).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=8 samples=64 images=512
if [ "${1:-}" = "--minutes" ]; then minutes=$2; shift 2; fi
if [ "${1:-}" = "--small" ]; then samples=4 images=32; shift; fi
out=${1:-${OUT:-gpu-train}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python=python3
if [ -x .venv/bin/python ]; then python=.venv/bin/python; fi
if [ -d .whl ] && ! $python -c "import diffusers" 2>/dev/null; then
  $python -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
if ! $python -c "import diffpath" 2>/dev/null; then
  $python -m pip install -q --no-index --no-deps --no-build-isolation -e .
fi
if [ ! -f .data/faces32/val.parquet ]; then
  echo "error: .data/faces32 is missing: run scripts/gpu-wheels.sh --faces first and carry .data" >&2
  exit 2
fi
scratch=$(mktemp -d)
pids=()
for candidate in warm large; do
  $python - "$candidate" "$scratch/$candidate" "$minutes" "$samples" \
    > "$out/$candidate.log" 2>&1 <<'PY' &
import logging, sys, time
from pathlib import Path

import yaml

from diffpath.model.train import TrainConfig, train

name, run_dir, minutes, samples = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
config = TrainConfig(**yaml.safe_load(Path(f"recipes/v2-gpu-{name}.yaml").read_text()))
started = time.monotonic()

def progress(step: int, total: int, loss: float) -> None:
    if step % 200 == 0:
        print(f"{name} step {step} loss {loss:.4f} {step / (time.monotonic() - started):.1f} steps/s")

train(config, run_dir, max_minutes=minutes, samples=samples, progress=progress)
print(f"{name} done")
PY
  pids+=($!)
done
sync_out() {  # everything but the checkpoints (optimizer state) comes back
  for candidate in warm large; do
    if [ -d "$scratch/$candidate" ]; then
      mkdir -p "$out/$candidate"
      find "$scratch/$candidate" -mindepth 1 -maxdepth 1 ! -name checkpoints \
        -exec cp -r {} "$out/$candidate/" \;
    fi
  done
}
running() { for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && return 0; done; return 1; }
while running; do sleep 60; sync_out; tail -qn1 "$out"/*.log; done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
sync_out
tail -n3 "$out"/*.log
if [ $status -ne 0 ]; then echo "error: a training run failed; see $out/*.log" >&2; exit 1; fi
$python benchmarks/memorisation.py --recipe recipes/v2-gpu-warm.yaml --images "$images" \
  --models default "$out/warm" "$out/large" | tee "$out/memorisation.md"
