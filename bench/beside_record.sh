#!/usr/bin/env bash
# Issue 12's acceptance 2 in one command, on a host of two GPUs: the 2026-03-31 record script (#1204, the best
# sp1024 record) on GPU 1 and pgolf's RECIPE on GPU 0, at the same time, both on the golfbench proxy (240 s of
# training, one rank's batch), then each one's roundtrip scores side by side.
#
#   bench/beside_record.sh warm        # once per machine: 30 s of the record, to fill its inductor cache (cold, its
#                                      # compile took 5-6 min in session 13; with 30 s its recurrence never starts)
#   bench/beside_record.sh [RECIPE [proxy.sh args...]]      default: best, scored by sliding s64 with TTT off
#
# The record runs as its README ran it on 8xH100, its schedules in iterations scaled to the proxy's ~2,450 steps
# (RECUR_START_STEP 3000 of ~6,240 -> 1240, WARMDOWN_ITERS 1330, MUON_MOMENTUM_WARMUP_STEPS 570, session 14),
# GPTQ_BATCH_SIZE=64, mix-order reduction off (inductor's, which crashed its two lanes); RECORD_ENV adds or
# overrides. Its self-generated GPTQ calibration runs after its clock (pgolf's GPTQ is inside it), and its sliding
# eval may not finish inside the call (RECORD_TIMEOUT, default 585 s): compare "roundtrip plain", which both print.
# SHARED, DATA, WHEELS: see bench/record_env.sh. Results in $OUT: r0331.log, pgolf's proxy tarball and its SUMMARY,
# and two SIDE lines.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/out}; mkdir -p "$out"
source bench/record_env.sh
script=$shared/bench/records/2026-03-31_ParallelResiduals_MiniDepthRecurrence/train_gpt.py
[ -f "$script" ] || { echo "bench/beside_record.sh: no record script at $script" >&2; exit 2; }
renv=(BIGRAM_DIM=112 MIXED_QUANT=1 N_INT6_LAYERS=32 NUM_LAYERS=11 RECUR_LAYERS=4,5 RECUR_START_STEP=1240
      REPEAT_UNTIE_MLP=full REPEAT_UNTIE_MLP_LAYERS=4,5 DISABLE_LAYER0_ATTN=1 PARALLEL_RESIDUAL=1
      PARALLEL_START_LAYER=7 WARMDOWN_ITERS=1330 MUON_MOMENTUM_WARMUP_STEPS=570 TORCHINDUCTOR_MIX_ORDER_REDUCTION=0
      GPTQ_BATCH_SIZE=64 ${RECORD_ENV:-})
record() {  # record NAME BUDGET TIMEOUT: the record on its GPU
  CUDA_VISIBLE_DEVICES=${RECORD_GPU:-1} run_record "$script" "$@" "${renv[@]}"
}
if [ "${1:-}" = warm ]; then
  record r0331warm 30 300
  exit 0
fi
recipe=${1:-best}; [ $# -gt 0 ] && shift
args=("$@"); [ ${#args[@]} -eq 0 ] && args=(--set eval.ttt=false --set eval.final=sliding)
record r0331 240 "${RECORD_TIMEOUT:-585}" > "$out/r0331.out" 2>&1 &
rec=$!
sleep 5  # the record's runner decompresses the shards pgolf's proxy builds too; let it start first
CUDA_VISIBLE_DEVICES=${PGOLF_GPU:-0} bench/proxy.sh "${recipe}0" "$recipe" "${args[@]}" > "$out/pgolf.out" 2>&1
wait $rec
grep -h "^SUMMARY" "$out/pgolf.out"
python3 - "$out/r0331.log" "$out/pgolf.out" <<'PY'
import json, os, re, sys
rec = open(sys.argv[1], errors="replace").read() if os.path.exists(sys.argv[1]) else ""
plain = re.findall(r"final_int6_roundtrip_exact val_loss:\S+ val_bpb:([0-9.]+)", rec)
slide = (re.findall(r"final_int6_sliding_window_s64_exact val_loss:\S+ val_bpb:([0-9.]+)", rec)
         or re.findall(r"final_int6_sliding_window_exact val_loss:\S+ val_bpb:([0-9.]+)", rec))
size = re.findall(r"Total submission size[^:\n]*: (\d+) bytes", rec)
print("SIDE record-0331", json.dumps({"roundtrip_plain": float(plain[-1]) if plain else None,
                                      "sliding": float(slide[-1]) if slide else None,
                                      "bytes": int(size[-1]) if size else None}))
lines = [l for l in open(sys.argv[2], errors="replace") if l.startswith("SUMMARY")]
if lines:
    parts = lines[-1].split(" ", 2)[2]
    s, end = json.JSONDecoder().raw_decode(parts)
    evals = json.loads(parts[end:])
    rt = evals["roundtrip"]
    print("SIDE pgolf", json.dumps({"roundtrip_plain": rt.get("plain", {}).get("val_bpb"),
                                    "sliding": rt.get("sliding", {}).get("val_bpb"), "bytes": s.get("bytes_total")}))
else:
    print("SIDE pgolf", json.dumps({"roundtrip_plain": None, "sliding": None, "bytes": None}))
PY
