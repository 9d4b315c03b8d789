#!/usr/bin/env bash
# Issue 13's export table on a lent GPU: `pgolf requant` of one kept-float run (train.keep_float=true) under several
# storage policies at once, one process per variant (the exports are CPU-bound: zstd/brotli, GPTQ's solve), so that a
# dozen variants take about as long as the slowest.
#
#   bench/requant.sh RUN "NAME:key=value;key=value" ...      e.g.  bench/requant.sh /tmp/pgolf-runs/bestkf "own:" \
#                                                                    "auto:quant.compressor=auto" "gptq:quant.gptq=true"
#
# Each process holds 4-8 GB of GPU memory (GPTQ's calibration, the eval batch): 8 at once fit an 80 GB GPU, 12 did not.
# Environment: JOBS (variants at once, default 6), MODES (default plain), THREADS (torch threads per process,
# default 2), LIMIT (seconds a variant may take, default 3600), SETS ("key=value key=value": --set for every variant
# and the pre-quant score, e.g. the zstd level). Writes $OUT/requant.json (every variant's row: policy, bytes,
# pre-quant / roundtrip / gap per mode, export seconds) and $OUT/requant.log (each process's output), and prints
# the table.
set -uo pipefail
run=$1; shift
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/out}; mkdir -p "$out"
tmp=$(mktemp -d)
export PYTHONUNBUFFERED=1  # a variant stopped at LIMIT still leaves what it printed
sets=(--set eval.batch_tokens=65536)
for kv in ${SETS:-}; do sets+=(--set "$kv"); done
one() {  # INDEX VARIANT
  OMP_NUM_THREADS=${THREADS:-2} timeout "${LIMIT:-3600}" python3 -m pgolf requant "$run" --variant "$2" \
    --modes "${MODES:-plain}" "${sets[@]}" --json "$tmp/$1.json" > "$tmp/$1.log" 2>&1 \
    || echo "variant $2 failed" >> "$tmp/$1.log"
}
i=0
for v in "$@"; do
  i=$((i + 1))
  one "$i" "$v" &
  while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-6}" ]; do sleep 1; done
done
wait
cat "$tmp"/*.log > "$out/requant.log"
python3 - "$tmp" "$out/requant.json" <<'PY'
import glob, json, os, sys
runs = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.json")), key=lambda f: int(os.path.basename(f)[:-5]))]
rows = [r for j in runs for r in j["variants"]]
json.dump({"run": runs[0]["run"] if runs else None, "prequant": runs[0]["prequant"] if runs else None, "variants": rows},
          open(sys.argv[2], "w"), indent=2)
for r in rows:
    gaps = "  ".join(f"{m} {v['roundtrip']:.5f} (gap {v['gap']:+.5f})" for m, v in r["modes"].items())
    print(f"REQUANT {r['variant']:16s} {r['bytes_total']:>12,} bytes  {gaps}  export {r['export_s']:.1f}s  "
          f"{'/'.join(r['policy'].values())}  {';'.join(r['sets'])}")
PY
grep -h "failed\|Error" "$out/requant.log" | head -5
rm -rf "$tmp"
