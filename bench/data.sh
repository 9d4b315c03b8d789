#!/usr/bin/env bash
# Golfbench shards, once per machine (an existing build, i.e. its manifest.json or shards, is kept), for each
# argument (default 1024):
#   N     a vocab size: the challenge's tokenizer .bench/tokenizers/fineweb_N_bpe.model, into .data/golfbench_spN.
#         sp1024: the carried .bench/golfbench_sp1024/*.xz decompressed (the exact challenge-format files of
#         ../shared) where they are carried; otherwise built from .bench/text with `pgolf data build`.
#   NAME  any tokenizer .bench/tokenizers/NAME.model (one trained with `pgolf data tokenizer`), into
#         .data/golfbench_NAME; a CaseOps tokenizer's build takes --caseops (the transform and the byte sidecars).
# Installs the carried wheels (zstandard, brotli) when the Python lacks them.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import zstandard" 2>/dev/null || python3 -m pip install -q --no-index .bench/wheels/*.whl
pids=()
for v in "${@:-1024}"; do
  if [[ $v =~ ^[0-9]+$ ]]; then d=.data/golfbench_sp$v; tok=.bench/tokenizers/fineweb_${v}_bpe.model
  else d=.data/golfbench_$v; tok=.bench/tokenizers/$v.model; fi
  [ -f "$tok" ] || { echo "bench/data.sh: no tokenizer $tok for '$v'" >&2; exit 2; }
  if [ "$v" = 1024 ] && ls .bench/golfbench_sp1024/*.xz >/dev/null 2>&1; then
    [ -f "$d/fineweb_val_000000.bin" ] && continue
    mkdir -p "$d"
    python3 - "$d" <<'PY' &
import lzma, shutil, sys, glob, os
for src in glob.glob(".bench/golfbench_sp1024/*.xz"):
    with lzma.open(src) as f, open(os.path.join(sys.argv[1], os.path.basename(src)[:-3]), "wb") as g:
        shutil.copyfileobj(f, g, 1 << 24)
PY
    pids+=($!)
    continue
  fi
  [ -f "$d/manifest.json" ] && continue
  caseops=$(python3 -c "import sys; from pgolf.tokenizer import is_caseops, load_sentencepiece as l
print('--caseops' if is_caseops(l(sys.argv[1])) else '')" "$tok") || exit 2
  python3 -m pgolf data build --input .bench/text/golfbench_train.jsonl.xz \
    --val-input .bench/text/golfbench_val.jsonl.xz --tokenizer "$tok" --out "$d" $caseops &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || { echo "bench/data.sh: a build failed (above)" >&2; exit 1; }; done
