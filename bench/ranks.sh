#!/usr/bin/env bash
# Issue 11's acceptance 3 on a host of two GPUs: 2 ranks against 1 (Muon sharded across them).
#
#   bench/ranks.sh speed [RECIPE [pgolf args...]]   `pgolf bench` on GPU 0 alone (--gpu-share 8), then under torchrun
#                                                   on GPUs 0 and 1 (--gpu-share 4: 1/8 of the global batch each):
#                                                   the per-GPU tokens/s of both and their ratio (wanted: within 5%)
#   bench/ranks.sh loss [RECIPE [pgolf args...]]    a quarter of the global batch, STEPS steps (default 300), one
#                                                   seed, trained by 1 process (two micro-batches accumulated) and by
#                                                   2 (one each): the train loss of both every 25 steps and the
#                                                   largest gap over the last 100 (the same math, bit for bit on the
#                                                   CPU; on GPUs the kernels' rounding makes noise)
#
# RECIPE defaults to best. DATA: golfbench sp1024 shards (default .data/golfbench_sp1024, built by bench/data.sh);
# TOKENIZER (default .bench/tokenizers/fineweb_1024_bpe.model). Results in $OUT: the bench JSONs or the two runs'
# metrics.jsonl, and RANKS lines on stdout.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/out}; mkdir -p "$out"
mode=${1:-}; [ $# -gt 0 ] && shift
case $mode in
  speed|loss) ;;
  *) echo "bench/ranks.sh: the first argument is speed or loss, not '$mode'" >&2; exit 2 ;;
esac
recipe=${1:-best}; [ $# -gt 0 ] && shift
data=${DATA:-.data/golfbench_sp1024}
[ -n "${DATA:-}" ] || bench/data.sh 1024 || exit 2
common=(--recipe "$recipe" --data "$data" --tokenizer "${TOKENIZER:-.bench/tokenizers/fineweb_1024_bpe.model}")
two=(python3 -m torch.distributed.run --standalone --nproc_per_node=2)
export PYTHONUNBUFFERED=1
if [ "$mode" = speed ]; then
  CUDA_VISIBLE_DEVICES=0 python3 -m pgolf bench "${common[@]}" --gpu-share 8 --steps 40 --profile-steps 4 --top 5 \
    --json "$out/ranks1.json" "$@" 2>&1 | tee "$out/ranks1.txt"
  CUDA_VISIBLE_DEVICES=0,1 "${two[@]}" -m pgolf bench "${common[@]}" --gpu-share 4 --steps 40 --profile-steps 4 \
    --top 5 --json "$out/ranks2.json" "$@" 2>&1 | tee "$out/ranks2.txt"
  python3 - "$out/ranks1.json" "$out/ranks2.json" <<'PY'
import json, sys
one, two = (json.load(open(p)) for p in sys.argv[1:])
print(f"RANKS speed {one['recipe']}: 1 rank {one['tokens_per_s_per_gpu']:,.0f} tokens/s per GPU "
      f"({one['ms_per_step']:.1f} ms), 2 ranks {two['tokens_per_s_per_gpu']:,.0f} ({two['ms_per_step']:.1f} ms): "
      f"{two['tokens_per_s_per_gpu'] / one['tokens_per_s_per_gpu']:.3f}")
PY
  exit 0
fi
steps=${STEPS:-300}
# a quarter of the recipe's global batch in micro-batches of an eighth: one process accumulates two, two processes
# take one each -- the same math (tests/test_train.py proves it bit for bit on the CPU)
batch=$(python3 -c "from pgolf.recipes import get_recipe; print(get_recipe('$recipe').train.batch_tokens)") || exit 2
runs=$(mktemp -d /tmp/pgolf-ranks.XXXXXX)
train=(-m pgolf train "${common[@]}" --set train.batch_tokens=$((batch / 4))
       --set train.micro_batch_tokens=$((batch / 8)) --set train.iterations="$steps" --set train.max_seconds=0
       --set train.val_every=0 --set eval.ttt=false --set eval.final=plain --set eval.sliding_stride=0
       --set eval.prequant_sliding=false --out "$runs")
CUDA_VISIBLE_DEVICES=0 python3 "${train[@]}" --name one "$@" 2>&1 | grep --line-buffered -v "^step:" \
  | tee "$out/one.txt"
CUDA_VISIBLE_DEVICES=0,1 "${two[@]}" "${train[@]}" --name two "$@" 2>&1 | grep --line-buffered -v "^step:" \
  | tee "$out/two.txt"
cp "$runs/one/metrics.jsonl" "$out/one.jsonl" && cp "$runs/two/metrics.jsonl" "$out/two.jsonl" || exit 1
python3 - "$out/one.jsonl" "$out/two.jsonl" <<'PY'
import json, sys
one, two = ({r["step"]: r["loss"] for r in map(json.loads, open(p)) if r.get("kind") == "train"} for p in sys.argv[1:])
steps = sorted(set(one) & set(two))
for s in steps[::25]:
    print(f"RANKS loss step {s}: 1 rank {one[s]:.4f}, 2 ranks {two[s]:.4f}")
tail = steps[-100:]
print(f"RANKS loss: mean over the last {len(tail)} steps 1 rank {sum(one[s] for s in tail) / len(tail):.4f}, "
      f"2 ranks {sum(two[s] for s in tail) / len(tail):.4f}; largest gap {max(abs(one[s] - two[s]) for s in tail):.4f}")
PY
