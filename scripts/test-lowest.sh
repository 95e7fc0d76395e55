#!/usr/bin/env bash
# The oldest versions pyproject.toml allows: a fresh virtualenv (.venv-lowest) with every
# direct dependency at its floor (uv's lowest-direct resolution; torch stays the CPU wheel
# pip's own configuration finds), then the fast tier and the S3, lock and cache tests.
# A floor that is too low fails here, not on a user's machine. CI runs it after the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .venv-lowest
python3 -m venv .venv-lowest
. .venv-lowest/bin/activate
pip install -q torch==2.13.0 uv
links=$(pip config get global.find-links 2>/dev/null || true)
uv pip install -q --resolution lowest-direct ${links:+--find-links "$links"} \
    --override <(python -c "import torch; print('torch==' + torch.__version__.split('+')[0])") \
    -e ".[dev]"
uv pip list 2>/dev/null | grep -iE "^(fsspec|s3fs|botocore|prefect|diffusers|pydantic|numpy|pyarrow|polars) "
python -m pytest -q -p no:cacheprovider -m "not slow and not integration"
python -m pytest -q -p no:cacheprovider tests/unit/io/test_lock.py tests/unit/features/test_cache.py \
    tests/integration/test_s3.py tests/integration/test_s3_outage.py
