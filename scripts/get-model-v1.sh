#!/usr/bin/env bash
# Base model v1 (fingerprint b7aa9cb5a103605e: 95 CPU minutes on 4,800 CelebA faces), the
# bundled default before v2, written from this repository's history into DEST:
#
#   scripts/get-model-v1.sh ~/models/diffpath-v1
#   diffpath screen DUMP --reference OLD/reference.json --model ~/models/diffpath-v1 --out ...
set -euo pipefail
dest=${1:?usage: scripts/get-model-v1.sh DEST}
v1=90e39af  # the last commit with v1 as diffpath/assets/default-model
mkdir -p "$dest"
git -C "$(dirname "$0")/.." archive "$v1" diffpath/assets/default-model | tar -x -C "$dest" --strip-components=3
echo "base model v1 in $dest"
