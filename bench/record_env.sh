# Sourced by bench/vs_record.sh and bench/beside_record.sh (from the repository root): where the challenge's record
# scripts and their data are, and `run_record`, which runs one through ../shared/bench/records/run_record.sh.
# SHARED: the folder holding bench/records, data/golfbench_sp1024 and tokenizers (default ../shared, else
# .bench/shared, since a device gets only what is carried); DATA: the decompressed shards (default
# /tmp/golfbench_sp1024, which the runner fills from SHARED); WHEELS: zstandard/brotli wheels for the device's
# Python (default .bench/wheels/*.whl, installed by the runner); OUT: where the record's log goes.
shared=${SHARED:-../shared}; [ -d "$shared/bench/records" ] || shared=.bench/shared
shared=$(cd "$shared" 2>/dev/null && pwd) || { echo "$0: no shared folder (set SHARED)" >&2; exit 2; }
data=${DATA:-/tmp/golfbench_sp1024}
wheels=${WHEELS:-$(ls "$PWD"/.bench/wheels/*.whl 2>/dev/null | tr '\n' ' ')}
tokenizer=$shared/tokenizers/fineweb_1024_bpe.model

run_record() {  # run_record SCRIPT NAME BUDGET TIMEOUT [ENV=VALUE ...]: the log in $out/NAME.log
  local script=$1 name=$2 budget=$3 limit=$4; shift 4
  DATA=$data TOKENIZER=$tokenizer WHEELS="$wheels" BUDGET=$budget OUT=$out timeout "$limit" \
    "$shared/bench/records/run_record.sh" "$script" "$name" "$@"
}
