#!/usr/bin/env bash
# The golfbench proxy (../shared/bench/README.md) on a lent GPU: one H100, 240 s of training, one rank's share of
# the recipe's 8-GPU global batch.
#
#   bench/proxy.sh NAME RECIPE [pgolf train args...]
#
# Expects .bench/ (git-ignored, carried to the device) holding the golfbench .xz shards, tokenizers/ and wheels/
# (zstandard for the device's Python). Results: $OUT/NAME.tar.gz (the run directory without the artifact) and a
# one-line JSON summary on stdout.
set -euo pipefail
name=$1; recipe=$2; shift 2
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/out}; mkdir -p "$out"
python3 -c "import zstandard" 2>/dev/null || python3 -m pip install -q --no-index .bench/wheels/*.whl
data=.bench/golfbench_sp1024
if [ ! -f "$data/fineweb_val_000000.bin" ]; then
  mkdir -p "$data"
  python3 - <<'PY'
import lzma, shutil
for s in ("train", "val"):
    with lzma.open(f".bench/fineweb_{s}_000000.bin.xz") as f, open(f".bench/golfbench_sp1024/fineweb_{s}_000000.bin", "wb") as g:
        shutil.copyfileobj(f, g, 1 << 24)
PY
fi
runs=/tmp/pgolf-runs; mkdir -p "$runs"
export PYTHONUNBUFFERED=1
# PGOLF_ENTRY=path/to/train_gpt.py runs a packed single file instead of the package (RECIPE is then ignored).
entry=(-m pgolf train --recipe "$recipe")
[ -n "${PGOLF_ENTRY:-}" ] && entry=("$PGOLF_ENTRY")
python3 "${entry[@]}" --data "$data" --tokenizer .bench/tokenizers/fineweb_1024_bpe.model \
  --gpu-share 8 --budget 240 --out "$runs" --name "$name" "$@" 2>&1 | grep -v "^step:[0-9]*[1-9]/" || true
tar -czf "$out/$name.tar.gz" -C "$runs" --exclude=model.pgz "$name"
cp "$runs/$name/model.pgz" "$out/$name.pgz" 2>/dev/null || true
python3 -c "import json,sys; s=json.load(open('$runs/$name/summary.json')); print('SUMMARY', json.dumps({k: s[k] for k in ('recipe','steps','ms_per_step','tokens_per_s','peak_mem_mib','val_bpb','bytes_total','bytes_model','bytes_code','attention','torch','device')}), json.dumps({'prequant': s['prequant'], 'roundtrip': s['roundtrip']}))"
