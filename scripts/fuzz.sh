#!/usr/bin/env bash
# Runs the cargo-fuzz targets (fuzz/): each for SECONDS (default 60), one
# libFuzzer process at a time, and prints executions and crashes per target.
#
#   scripts/fuzz.sh [SECONDS]
#
# Works on the stable toolchain: RUSTC_BOOTSTRAP=1 lets stable rustc accept
# the -Z flags cargo-fuzz passes (-Zsanitizer=address and friends). With a
# nightly toolchain installed, `cargo +nightly fuzz run ...` works as well.
# Exits non-zero if a target crashed; the crashing input is left in
# fuzz/artifacts/<target>/ (replay: cargo fuzz run -a <target> <file>).
set -euo pipefail

secs="${1:-60}"
case "$secs" in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
targets=(request_framer reply_framer)
logdir="$(mktemp -d)"
status=0
summary=()

for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    echo "== $t: ${secs}s" >&2
    rc=0
    # -a: debug assertions and overflow checks on, so arithmetic overflow in
    # the framers is a crash. The first corpus directory collects new
    # inputs; fuzz/seeds/<target> is only read.
    cargo fuzz run -a "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -max_len=8192 -print_final_stats=1 \
        2>&1 | tee "$logdir/$t.log" >&2 || rc=$?
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logdir/$t.log" | grep -o '[0-9]*$' | tail -n 1)"
    time_s="$(grep -o 'Done [0-9]* runs in [0-9]* second' "$logdir/$t.log" | grep -o 'in [0-9]*' | grep -o '[0-9]*' | tail -n 1)"
    if [ "$rc" -ne 0 ]; then
        status=1
        crashes="1 (see fuzz/artifacts/$t/)"
    else
        crashes=0
    fi
    summary+=("$t	executions=${execs:-?}	time=${time_s:-?}s	crashes=$crashes")
done

echo
printf '%s\n' "${summary[@]}"
rm -rf "$logdir"
exit "$status"
