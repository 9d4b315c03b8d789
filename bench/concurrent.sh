#!/usr/bin/env bash
# Several proxy runs at once on one multi-GPU host, each pinned to its own GPUs, so that the runs compared in one
# lease share the machine, the software and the time of day.
#
#   bench/concurrent.sh "GPUS NAME RECIPE [args...]" ...     e.g.  "0 pr236 seed-pr236" "2,3 best2 best"
#
# A spec's environment (VOCAB=8192, TOK=NAME, PGOLF_ENTRY=..., BUDGET=...) goes in front: "VOCAB=8192 3 sp8192 best".
# NPROC is the number of GPUs listed. Each run's output goes to $OUT/NAME.log; the SUMMARY lines are printed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/out}; mkdir -p "$out"
vocabs=$(printf '%s\n' "$@" | grep -o '\(VOCAB\|TOK\)=[^ ]*' | cut -d= -f2 | sort -u)
bench/data.sh 1024 $vocabs || exit 1
names=()
for spec in "$@"; do
  read -r -a words <<< "$spec"
  envs=()
  while [[ ${words[0]} == *=* ]]; do envs+=("${words[0]}"); words=("${words[@]:1}"); done
  gpus=${words[0]}; name=${words[1]}; names+=("$out/$name.log")
  n=$(tr ',' '\n' <<< "$gpus" | wc -l)
  env "${envs[@]}" CUDA_VISIBLE_DEVICES="$gpus" NPROC="$n" bench/proxy.sh "${words[@]:1}" > "$out/$name.log" 2>&1 &
done
wait
grep -h "^SUMMARY" "${names[@]}"
