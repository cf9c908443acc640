#!/bin/bash
# `dynblocks selftest` catches a wrong kernel: DYNBLOCKS_SELFTEST_FAULT
# perturbs one op's results as they are read back (the test hook of
# src/selftest), and the run must then fail with exit 1, with every row of
# that op (each route, each type) marked FAIL and every other row passing.
# Usage: selftest_fault.sh DYNBLOCKS_BINARY
set -u
bin=$1
op=conv2d_backward_weights
out=$(mktemp)
trap 'rm -f "$out"' EXIT
DYNBLOCKS_SELFTEST_FAULT=$op "$bin" selftest --quick >"$out" 2>&1
rc=$?
cat "$out"
fail() { echo "selftest_fault: $*" >&2; exit 1; }
[ "$rc" -eq 1 ] || fail "exit status $rc, expected 1"
faulted=$(awk -v op="$op" '$1 == op' "$out" | wc -l)
faulted_failed=$(awk -v op="$op" '$1 == op && / FAIL /' "$out" | wc -l)
other_failed=$(awk -v op="$op" '$1 != op && / FAIL /' "$out" | wc -l)
passed=$(awk '/ pass /' "$out" | wc -l)
[ "$faulted" -ge 3 ] || fail "expected rows of $op for gemm, row and wide, found $faulted"
[ "$faulted_failed" -eq "$faulted" ] || fail "$faulted_failed of $faulted rows of $op failed"
[ "$other_failed" -eq 0 ] || fail "$other_failed rows of other ops failed"
[ "$passed" -ge 50 ] || fail "only $passed rows passed"
grep -q "$faulted failed" "$out" || fail "the summary does not count $faulted failed rows"
echo "selftest_fault: ok ($faulted faulted rows failed, $passed others passed)"
