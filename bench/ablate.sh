#!/usr/bin/env bash
# One row of issue 12's ablation table on a lent GPU: the proxy run of RECIPE with technique number N turned off
# (the N-th row of `pgolf techniques --recipe RECIPE --ablate`, counted from 1), named ablate-N; N=0 runs RECIPE
# as it is (the reference, and with two of them the spread). One row fits one call (~7.5 minutes on an H200).
#
#   bench/ablate.sh RECIPE N [more proxy.sh args...]      e.g.  bench/ablate.sh best 3
#
# Environment as bench/proxy.sh (VOCAB, BUDGET, ...). Prints the row's name and overrides, then proxy.sh's SUMMARY.
set -euo pipefail
recipe=$1; n=$2; shift 2
cd "$(dirname "$0")/.."
rows=$(python3 - "$recipe" "$n" <<'PY'
import sys
from pgolf.recipes import get_recipe
from pgolf.techniques import ablations
recipe, n = sys.argv[1], int(sys.argv[2])
rows = ablations(get_recipe(recipe))
if not 0 <= n <= len(rows):
    sys.exit(f"bench/ablate.sh: row {n} of {recipe}'s ablation does not exist (0..{len(rows)})")
name, sets = ("(none: the recipe as it is)", []) if n == 0 else rows[n - 1]
print(f"ABLATE {recipe} row {n}: {name}: {' '.join(sets) or '-'}", file=sys.stderr)
for s in sets:
    print(s)
PY
) || exit 2
args=()
while read -r s; do [ -n "$s" ] && args+=(--set "$s"); done <<< "$rows"
bench/proxy.sh "ablate-$n" "$recipe" --set train.val_every=0 "${args[@]}" "$@"
