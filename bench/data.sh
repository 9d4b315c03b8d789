#!/usr/bin/env bash
# Golfbench shards for the given vocab sizes (default 1024) in .data/golfbench_spN, once per machine (an existing
# build, i.e. its manifest.json or shards, is kept). sp1024: the carried .bench/golfbench_sp1024/*.xz decompressed
# (the exact challenge-format files of ../shared); other sizes: built from .bench/text with `pgolf data build`.
# Installs the carried wheels (zstandard, brotli) when the Python lacks them.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import zstandard" 2>/dev/null || python3 -m pip install -q --no-index .bench/wheels/*.whl
for v in "${@:-1024}"; do
  d=.data/golfbench_sp$v
  if [ "$v" = 1024 ] && ls .bench/golfbench_sp1024/*.xz >/dev/null 2>&1; then
    [ -f "$d/fineweb_val_000000.bin" ] && continue
    mkdir -p "$d"
    python3 - "$d" <<'PY' &
import lzma, shutil, sys, glob, os
for src in glob.glob(".bench/golfbench_sp1024/*.xz"):
    with lzma.open(src) as f, open(os.path.join(sys.argv[1], os.path.basename(src)[:-3]), "wb") as g:
        shutil.copyfileobj(f, g, 1 << 24)
PY
    continue
  fi
  [ -f "$d/manifest.json" ] && continue
  python3 -m pgolf data build --input .bench/text/golfbench_train.jsonl.xz \
    --val-input .bench/text/golfbench_val.jsonl.xz --tokenizer ".bench/tokenizers/fineweb_${v}_bpe.model" --out "$d" &
done
wait
