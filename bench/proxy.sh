#!/usr/bin/env bash
# The golfbench proxy (../shared/bench/README.md) on a lent GPU: 240 s of training, one rank's share of the recipe's
# 8-GPU global batch.
#
#   bench/proxy.sh NAME RECIPE [pgolf train args...]
#
# Environment: VOCAB (1024, the default; 4096 or 8192: golfbench re-tokenized with the challenge's tokenizers), TOK
# (instead of VOCAB: a tokenizer of one's own, .bench/tokenizers/TOK.model, e.g. a CaseOps one; see bench/data.sh),
# NPROC (processes under torchrun, default 1: pin GPUs with CUDA_VISIBLE_DEVICES), BUDGET (seconds, default 240),
# SHARE (--gpu-share, default 8), PGOLF_ENTRY (a packed train_gpt.py to run instead of the package; RECIPE is then
# ignored), ALONE=1 (pack RECIPE with the same flags, copy the file alone into an empty folder and run it there,
# checking first that pgolf cannot be imported in it: the way a reviewer runs a records folder), KEEP_ARTIFACT=1
# (copy the artifact to $OUT too).
#
# Expects .bench/ (git-ignored, carried to the device) holding text/golfbench_{train,val}.jsonl.xz, tokenizers/ and
# wheels/ (zstandard for the device's Python). The shards are built from the text into .data/ once per machine
# (bench/data.sh; the sp1024 build is byte-identical to ../shared/data/golfbench_sp1024). Results: $OUT/NAME.tar.gz
# (the run directory without the artifact, plus `pgolf inspect` of the artifact) and a SUMMARY line on stdout.
set -euo pipefail
name=$1; recipe=$2; shift 2
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/out}; mkdir -p "$out"
vocab=${VOCAB:-1024}
tok=${TOK:-fineweb_${vocab}_bpe}
bench/data.sh "${TOK:-$vocab}"
data=.data/golfbench_${TOK:-sp$vocab}
runs=/tmp/pgolf-runs; mkdir -p "$runs"
export PYTHONUNBUFFERED=1
entry=(-m pgolf train --recipe "$recipe")
[ -n "${PGOLF_ENTRY:-}" ] && entry=("$PGOLF_ENTRY")
here=$PWD
if [ -n "${ALONE:-}" ]; then
  alone=/tmp/alone-$name; rm -rf "$alone"; mkdir -p "$alone"
  python3 -m pgolf pack --recipe "$recipe" --gpu-share "${SHARE:-8}" --budget "${BUDGET:-240}" "$@" -o "$alone/train_gpt.py"
  cd "$alone"
  if python3 -c "import pgolf" 2>/dev/null; then echo "ALONE: pgolf is importable in $alone" >&2; exit 1; fi
  echo "ALONE: pgolf not importable in $alone; running $(wc -c < train_gpt.py) bytes of train_gpt.py"
  entry=("$alone/train_gpt.py")
  data=$here/$data
fi
launch=(python3)
[ "${NPROC:-1}" -gt 1 ] && launch=(python3 -m torch.distributed.run --standalone --nproc_per_node="$NPROC")
packflags=(--gpu-share "${SHARE:-8}" --budget "${BUDGET:-240}" "$@")
[ -n "${ALONE:-}" ] && packflags=()  # baked into the packed file
"${launch[@]}" "${entry[@]}" --data "$data" --tokenizer "$here/.bench/tokenizers/$tok.model" \
  "${packflags[@]}" --out "$runs" --name "$name" 2>&1 | grep --line-buffered -v "^step:[0-9]*[1-9]/" || true
cd "$here"
[ -n "${ALONE:-}" ] && { cmp "$alone/train_gpt.py" "$runs/$name/train_gpt.py" && echo "ALONE: the run kept the very file it ran"; }
python3 -m pgolf inspect "$runs/$name/model.pgz" > "$runs/$name/inspect.txt" 2>&1 || true
tar -czf "$out/$name.tar.gz" -C "$runs" --exclude=model.pgz --exclude=model_float.pt "$name"
[ -n "${KEEP_ARTIFACT:-}" ] && cp "$runs/$name/model.pgz" "$out/$name.pgz" 2>/dev/null
python3 -c "import json,sys; s=json.load(open('$runs/$name/summary.json')); print('SUMMARY', '$name', json.dumps({k: s.get(k) for k in ('status','recipe','world_size','steps','train_time_s','ms_per_step','tokens_per_s','peak_mem_mib','val_bpb','bytes_total','bytes_model','bytes_code','bytes_predicted_model','quant_used','attention','torch','device','code_sha256','data_checks')}), json.dumps({'prequant': s['prequant'], 'roundtrip': s['roundtrip']}))"
