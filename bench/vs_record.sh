#!/usr/bin/env bash
# Issue 11's acceptance 2 side by side in one command: a challenge record script's training rate and pgolf's, one
# after the other on the same GPU. The record first, through ../shared/bench/records/run_record.sh (BUDGET seconds
# of training, default 60: its step_avg is steady from step ~200, and its eval after the clock is cut by the
# timeout), then `pgolf bench --vs-log` of RECIPE at the record's per-rank batch, which prints both tokens/s per GPU
# and the ratio.
#
#   bench/vs_record.sh [RECORD_DIR [RECIPE [pgolf bench args...]]]
#
# Defaults: the 2026-03-20 record (#162, the seed family) and pr164-s64, its model, at its 98,304 tokens a step
# (`--set train.batch_tokens=786432 --set optim.muon_wd=0.04` with `--gpu-share 8`). SHARED: the folder holding
# bench/records, data/golfbench_sp1024 and tokenizers (default ../shared, else .bench/shared, since a device gets
# only what is carried); DATA: the decompressed shards (default /tmp/golfbench_sp1024, which the runner fills from
# SHARED); WHEELS: zstandard/brotli wheels for the device's Python (default .bench/wheels/*.whl, installed by the
# runner). Results in $OUT: recNAME.log (the record's), bench.txt and bench.json (with "vs_record").
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/out}; mkdir -p "$out"
shared=${SHARED:-../shared}; [ -d "$shared/bench/records" ] || shared=.bench/shared
shared=$(cd "$shared" && pwd) || { echo "bench/vs_record.sh: no shared folder (set SHARED)" >&2; exit 2; }
record=${1:-$shared/bench/records/2026-03-20_Int6_MLP3x_SmearGate_BigramHash_MuonWD_SWA}
recipe=${2:-pr164-s64}; shift $(( $# > 2 ? 2 : $# ))
[ -f "$record/train_gpt.py" ] || { echo "bench/vs_record.sh: no train_gpt.py in $record" >&2; exit 2; }
name=$(basename "$record" | cut -c1-10 | tr -d -)
wheels=${WHEELS:-$(ls "$PWD"/.bench/wheels/*.whl 2>/dev/null | tr '\n' ' ')}
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader 2>/dev/null | tee "$out/gpu.txt"
data=${DATA:-/tmp/golfbench_sp1024}
DATA=$data TOKENIZER=$shared/tokenizers/fineweb_1024_bpe.model WHEELS="$wheels" \
  BUDGET=${BUDGET:-60} OUT=$out timeout "${RECORD_TIMEOUT:-330}" \
  "$shared/bench/records/run_record.sh" "$record/train_gpt.py" "rec$name"
extra=("$@")
[ "$recipe" = pr164-s64 ] && [ ${#extra[@]} -eq 0 ] && extra=(--set train.batch_tokens=786432 --set optim.muon_wd=0.04)
PYTHONUNBUFFERED=1 python3 -m pgolf bench --recipe "$recipe" --gpu-share 8 --data "$data" \
  --tokenizer "$shared/tokenizers/fineweb_1024_bpe.model" --steps 40 --profile-steps 8 --top 20 \
  --json "$out/bench.json" --vs-log "$out/rec$name.log" "${extra[@]}" 2>&1 | tee "$out/bench.txt"
