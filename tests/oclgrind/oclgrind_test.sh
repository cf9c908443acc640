#!/usr/bin/env bash
# Runs one test program on Oclgrind's simulated device with bounds checking
# (always on), data-race detection and API checking, and fails on any report.
# Usage: oclgrind_test.sh PROGRAM [ARGS...]
# Exit 77 (ctest's SKIP_RETURN_CODE) where oclgrind is not installed.
#
# Oclgrind 21.10 has no option that turns a report into an exit status: the
# program exits as it would have. Its reports go to stderr, so stderr is
# kept and searched. Not through --log: each OpenCL context opens the log
# file anew, truncating it (plugins/Logger.cpp), so a test that makes
# several contexts keeps only the last one's reports; and --check-api's
# reports are written to stderr whatever --log says (runtime.cpp,
# notifyAPIError). The markers are every report's fixed text: kernel
# reports (bounds, races, invalid accesses) carry a "Kernel: <name>" line,
# API misuse "Oclgrind - OpenCL runtime error detected", interpreter
# failures "OCLGRIND FATAL ERROR", and the error limit "Oclgrind: N errors".
#
# Not --uninitialized: with it this Oclgrind (21.10, LLVM 14) computes wrong
# results on our kernels. Its shadow-value plugin does not implement LLVM's
# `freeze` instruction, which clang 14 emits for them, and stops the
# work-item there: test_pool under --uninitialized prints
#   OCLGRIND FATAL ERROR (./src/plugins/Uninitialized.cpp:1805)
#   Unsupported instruction: freeze
#   	Kernel: dynb_avgpool2_forward
#   	  %conv.frozen = freeze i32 %conv
# and then fails "avgpool2_forward f32 1x1x2x2: element 0 is 0, expected
# -0.0807...". Without the plugin the interpreter executes `freeze`.
set -u
if ! command -v oclgrind >/dev/null 2>&1; then
  echo "oclgrind is not installed: skipped"
  exit 77
fi
err=$(mktemp "${TMPDIR:-/tmp}/dynb-oclgrind-XXXXXX")
trap 'rm -f "$err"' EXIT
# The test must run on the simulator, not on a device it happened to find
# (were the preload to fail, the ICD loader's devices would answer): the
# tests take their device by this name. DYNB_TEST_SMALL: the tests' small
# sizes (every edge case, fewer large ones), for the simulator's speed.
export DYNB_TEST_DEVICE=Oclgrind DYNB_TEST_SMALL=1
{
  oclgrind --data-races --check-api "$@" 2>&1 1>&3 3>&- | tee "$err" >&2
  rc=${PIPESTATUS[0]}
} 3>&1
if grep -q -E '^[[:space:]]*Kernel: |Oclgrind - OpenCL runtime error detected|OCLGRIND FATAL ERROR|^Oclgrind: ' "$err"; then
  echo "---- oclgrind reported errors (above); the test fails (program exit status $rc)" >&2
  exit 1
fi
exit "$rc"
