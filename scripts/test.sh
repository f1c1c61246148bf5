#!/usr/bin/env bash
# Runs the whole test suite (unit and integration tests against real Redis).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-redis.sh
bash scripts/install-clients.sh

# tests/scale.rs holds 10,000 client connections (20,000 descriptors across
# the test and the sidecar): raise the soft limit as far as allowed.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 12000 ]; then
    ulimit -n 12000 2>/dev/null || echo "test.sh: warning: open-file limit $(ulimit -n) is below what tests/scale.rs needs" >&2
fi

start=$(date +%s)
log=$(mktemp)
trap 'rm -f "$log"' EXIT

status=0
# --no-fail-fast: a failure in one binary (tests/it holds most tests) does not
# skip the others, so the totals below count every test.
cargo test --all-targets --no-fail-fast 2>&1 | tee "$log" || status=$?

passed=0 failed=0 ignored=0
while read -r p f i; do
    passed=$((passed + p)) failed=$((failed + f)) ignored=$((ignored + i))
done < <(sed -nE 's/^test result: .* ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 \2 \3/p' "$log")

elapsed=$(( $(date +%s) - start ))
if [ "$status" -eq 0 ]; then
    echo "test.sh: OK: ${passed} passed, ${failed} failed, ${ignored} ignored in ${elapsed}s"
else
    echo "test.sh: FAILED (exit ${status}): ${passed} passed, ${failed} failed, ${ignored} ignored in ${elapsed}s"
fi
exit "$status"
