#!/usr/bin/env bash
# Stage what scripts/gpu-check.sh needs on a lent GPU machine (Python 3.12, no network,
# PyTorch already there): wheels of the missing packages into .whl/ and images into .data/
# (the layout of ../shared/data). Default: CIFAR-10 train for the throughput table; with
# --faces: the training faces of recipes/v2-cpu.yaml (one file per source: train-0 is
# celeba/, train-1 celeba-extra/) and its validation faces, decoded and cropped to 32x32 as
# training sees them, stored as WebP (q90, ~25 MiB) in .data/faces32/ for
# scripts/gpu-train.sh; with --benchmark: exactly the images of
# benchmarks/shared-data.yaml --full (its split is by content, so it picks the same images
# from these files). A call carries 64 MiB in all.
# Both folders are git-ignored; carry them with the run.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .data && mkdir -p .data
wheels="diffusers==0.42.1 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0
  typing-inspection==0.4.5"
if [ "${1:-}" != "--faces" ]; then wheels="$wheels kornia==0.9.0 kornia_rs==0.2.0"; fi  # features only
rm -rf .whl && mkdir -p .whl
for spec in $wheels; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$spec"
done
if [ "${1:-}" = "--benchmark" ]; then
  .venv/bin/python - <<'PY'
from pathlib import Path
import pyarrow as pa, pyarrow.parquet as pq
from diffpath.benchmark.spec import load_spec
from diffpath.benchmark.splits import split_refs
spec = load_spec("benchmarks/shared-data.yaml")
for name, dataset in spec.datasets.items():
    roles = split_refs(spec, name, spec.full_sizes)
    files = {dataset.source: [*roles["fit"], *roles["validation"], *roles["test"]]} \
        if dataset.source else {dataset.train: [*roles["fit"], *roles["validation"]],
                                dataset.test: roles["test"]}
    for path, refs in files.items():
        table = pq.read_table(spec.uri(path))
        rows = sorted(r.row for r in refs)
        target = Path(".data") / path
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.take(pa.array(rows)), target, row_group_size=2000)
PY
elif [ "${1:-}" = "--faces" ]; then
  .venv/bin/python - <<'PY'
import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image

from diffpath.model.train import TrainConfig, load_image_tensor

recipe = TrainConfig(**yaml.safe_load(Path("recipes/v2-cpu.yaml").read_text()))
staged = {f"train-{i}": source for i, source in enumerate(recipe.data)}
for name, source in (staged | {"val": recipe.val_data[0]}).items():
    pixels = ((load_image_tensor([source], recipe.image_size) + 1) * 127.5).round().byte()
    blobs = []
    for image in pixels.permute(0, 2, 3, 1).numpy():
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="WEBP", quality=90)
        blobs.append(buffer.getvalue())
    target = Path(".data/faces32") / f"{name}.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    paths = [f"faces32/{name}/{i:06d}.webp" for i in range(len(blobs))]
    pq.write_table(pa.table({"path": paths, "image": blobs}), target, row_group_size=2000)
    print(f"{target}: {len(blobs)} faces")
PY
else
  mkdir -p .data/cifar10 && cp ../shared/data/cifar10/train.parquet .data/cifar10/
fi
du -sh .whl .data
