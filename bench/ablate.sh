#!/usr/bin/env bash
# One row of issue 12's ablation table on a lent GPU: the proxy run of RECIPE with technique number N turned off
# (the N-th row of `pgolf techniques --recipe RECIPE --ablate`, counted from 1), named ablate-N; N=0 runs RECIPE
# as it is (the reference, and with two of them the spread). N may also be a piece of the technique's name that
# names one row only (case ignored), since the numbers move when the recipe changes. One row fits one call (~6-8
# minutes on an H200).
#
#   bench/ablate.sh RECIPE N [more proxy.sh args...]      e.g.  bench/ablate.sh best 3; bench/ablate.sh best XSA
#
# The float weights are scored plain only (eval.prequant_sliding=false: the table reads pre-quant plain and the final;
# ~40-60 s a row), and the final is the sliding eval after the roundtrip (eval.ttt=false eval.final=sliding: TTT's
# warm-up and pass would push a row past one 600 s call). A row of TTT's own (all its keys eval.*) is not a training
# row: it is refused, since it is scored on row 0's artifact by `pgolf eval --mode ttt`. Environment as
# bench/proxy.sh (VOCAB, BUDGET, ...), and NAME: the run's name instead of ablate-N, for a variant scored as the rows
# are (`NAME=rope8 bench/ablate.sh best 0 --set model.rope_dims=8`) without taking row 0's run directory. Prints the
# row's name and overrides, then proxy.sh's SUMMARY.
set -euo pipefail
recipe=$1; n=$2; shift 2
cd "$(dirname "$0")/.."
rows=$(python3 - "$recipe" "$n" <<'PY'
import sys
from pgolf.recipes import get_recipe
from pgolf.techniques import ablations
recipe, which = sys.argv[1], sys.argv[2]
rows = ablations(get_recipe(recipe))
if not which.isdigit():
    hits = [i for i, (name, _) in enumerate(rows, 1) if which.lower() in name.lower()]
    if len(hits) != 1:
        sys.exit(f"bench/ablate.sh: {which!r} names {len(hits)} rows of {recipe}'s ablation, not one: "
                 + "; ".join(name for name, _ in (rows if not hits else [rows[i - 1] for i in hits])))
    which = str(hits[0])
n = int(which)
if not 0 <= n <= len(rows):
    sys.exit(f"bench/ablate.sh: row {n} of {recipe}'s ablation does not exist (0..{len(rows)})")
name, sets = ("(none: the recipe as it is)", []) if n == 0 else rows[n - 1]
if sets and all(s.startswith("eval.") for s in sets):
    sys.exit(f"bench/ablate.sh: row {n} ({name}) changes the eval only: score row 0's artifact with "
             f"`pgolf eval ARTIFACT --mode ttt --set {' --set '.join(sets)}` instead")
print(f"ABLATE {recipe} row {n}: {name}: {' '.join(sets) or '-'}", file=sys.stderr)
print(f"#{n}")
for s in sets:
    print(s)
PY
) || exit 2
args=()
while read -r s; do
  case $s in "#"*) n=${s#"#"} ;; ?*) args+=(--set "$s") ;; esac
done <<< "$rows"
bench/proxy.sh "${NAME:-ablate-$n}" "$recipe" --set train.val_every=0 --set eval.prequant_sliding=false --set eval.ttt=false \
  --set eval.final=sliding "${args[@]}" "$@"
