#!/usr/bin/env bash
# Build golfbench shards for the given vocab sizes (default 1024) from .bench/text into .data/golfbench_spN, once:
# an existing build (its manifest.json) is kept. Installs the carried zstandard wheel when the Python lacks it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import zstandard" 2>/dev/null || python3 -m pip install -q --no-index .bench/wheels/*.whl
for v in "${@:-1024}"; do
  d=.data/golfbench_sp$v
  [ -f "$d/manifest.json" ] && continue
  python3 -m pgolf data build --input .bench/text/golfbench_train.jsonl.xz \
    --val-input .bench/text/golfbench_val.jsonl.xz --tokenizer ".bench/tokenizers/fineweb_${v}_bpe.model" --out "$d" &
done
wait
