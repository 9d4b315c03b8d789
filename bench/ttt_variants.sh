#!/usr/bin/env bash
# TTT variants on one artifact, one after the other on one GPU: `pgolf eval ARTIFACT --mode ttt --set eval.ttt=true`
# with each variant's --sets. TTT's switches change the eval only, so the rows differ by the variant alone, on the
# same weights: no run-to-run training noise between them.
#
#   bench/ttt_variants.sh ARTIFACT "NAME:key=value;key=value" ...
#   e.g. bench/ttt_variants.sh /tmp/pgolf-runs/ablate-0/model.pgz "recipe:" "short16:eval.ttt_short_chunk=16" \
#          "asym:eval.ttt_prefix_frac=0.5;eval.ttt_asym_softcap=true"
#
# Environment: DATA (shard folder; default: the data and tokenizer the run used, as the artifact records them),
# TOKENIZER (with DATA: its tokenizer, where pgolf does not find it next to the data), LIMIT (seconds a variant may
# take, default 580), SETS ("key=value key=value": --set for every variant). Each variant's output goes straight to
# $OUT/ttt-NAME.txt (one cut by LIMIT keeps what it printed); $OUT/ttt_variants.json and the printed table give per
# variant its val_bpb, eval seconds, the challenge prediction and the compile warm-up.
set -uo pipefail
artifact=$1; shift
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/out}; mkdir -p "$out"
export PYTHONUNBUFFERED=1
[ -f "$artifact" ] || { echo "bench/ttt_variants.sh: no artifact at $artifact" >&2; exit 2; }
common=(--mode ttt --set eval.ttt=true)
if [ -n "${DATA:-}" ]; then
  [ -d "$DATA" ] || { echo "bench/ttt_variants.sh: DATA=$DATA is not a folder" >&2; exit 2; }
  common+=(--data "$DATA")
  [ -n "${TOKENIZER:-}" ] && common+=(--tokenizer "$TOKENIZER")
fi
for kv in ${SETS:-}; do common+=(--set "$kv"); done
names=()
for v in "$@"; do
  case "$v" in
    [A-Za-z0-9]*:*) ;;
    *) echo "bench/ttt_variants.sh: variant '$v' is not NAME:key=value;..." >&2; exit 2;;
  esac
  name=${v%%:*}; spec=${v#*:}
  sets=()
  IFS=';' read -ra kvs <<< "$spec"
  for kv in "${kvs[@]}"; do [ -n "$kv" ] && sets+=(--set "$kv"); done
  echo "== $name: ${sets[*]:-(as the artifact is)}"
  timeout "${LIMIT:-580}" python3 -m pgolf eval "$artifact" "${common[@]}" "${sets[@]}" > "$out/ttt-$name.txt" 2>&1 \
    || echo "variant $name failed or was cut (rc $?)" | tee -a "$out/ttt-$name.txt"
  names+=("$name")
done
python3 - "$out" "${names[@]}" <<'PY'
import json, os, re, sys
out, names = sys.argv[1], sys.argv[2:]
rows = []
for name in names:
    text = open(os.path.join(out, f"ttt-{name}.txt")).read()
    score = re.search(r"^ttt: val_loss:(\S+) val_bpb:(\S+) .*?eval:([\d.]+)s(?: \(predicted .*?: (\d+)s)?", text, re.M)
    warm = re.search(r"^ttt: compile warm-up on random tokens ([\d.]+)s", text, re.M)
    rows.append({"name": name, "val_bpb": float(score[2]) if score else None,
                 "eval_s": float(score[3]) if score else None,
                 "predicted_8gpu_s": int(score[4]) if score and score[4] else None,
                 "warmup_s": float(warm[1]) if warm else None})
json.dump(rows, open(os.path.join(out, "ttt_variants.json"), "w"), indent=1)
for r in rows:
    f = lambda k, fmt: "-" if r[k] is None else format(r[k], fmt)
    print(f"TTT {r['name']:16s} val_bpb {f('val_bpb', '.8f')}  eval {f('eval_s', '.1f')} s  "
          f"8 GPUs {f('predicted_8gpu_s', 'd')} s  warm-up {f('warmup_s', '.1f')} s")
sys.exit(1 if any(r["val_bpb"] is None for r in rows) else 0)  # a variant without a score: see its file
PY
