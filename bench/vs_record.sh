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
# (`--set train.batch_tokens=786432 --set optim.muon_wd=0.04` with `--gpu-share 8`). SHARED, DATA, WHEELS: see
# bench/record_env.sh. Results in $OUT: recNAME.log (the record's), bench.txt and bench.json (with "vs_record").
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/out}; mkdir -p "$out"
source bench/record_env.sh
record=${1:-$shared/bench/records/2026-03-20_Int6_MLP3x_SmearGate_BigramHash_MuonWD_SWA}
recipe=${2:-pr164-s64}; shift $(( $# > 2 ? 2 : $# ))
[ -f "$record/train_gpt.py" ] || { echo "bench/vs_record.sh: no train_gpt.py in $record" >&2; exit 2; }
name=$(basename "$record" | cut -c1-10 | tr -d -)
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader 2>/dev/null | tee "$out/gpu.txt"
run_record "$record/train_gpt.py" "rec$name" "${BUDGET:-60}" "${RECORD_TIMEOUT:-330}"
extra=("$@")
[ "$recipe" = pr164-s64 ] && [ ${#extra[@]} -eq 0 ] && extra=(--set train.batch_tokens=786432 --set optim.muon_wd=0.04)
PYTHONUNBUFFERED=1 python3 -m pgolf bench --recipe "$recipe" --gpu-share 8 --data "$data" \
  --tokenizer "$tokenizer" --steps 40 --profile-steps 8 --top 20 \
  --json "$out/bench.json" --vs-log "$out/rec$name.log" "${extra[@]}" 2>&1 | tee "$out/bench.txt"
