#!/usr/bin/env bash
# The test entry point (README, .ci/run): installs what is missing, builds
# with warnings as errors, runs every test; then the same under
# AddressSanitizer + UndefinedBehaviorSanitizer; then the threads test under
# ThreadSanitizer; then a short run of every libFuzzer target (scripts/fuzz.sh;
# clang).
# Usage: scripts/test.sh [--no-sanitize]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

jobs=$(nproc 2>/dev/null || echo 2)
run_suite() {
  local dir=$1 repeat=$2; shift 2
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDYNB_WERROR=ON "$@"
  cmake --build "$dir" -j "$jobs"
  (cd "$dir" && ctest --output-on-failure -j "$jobs" $repeat)
}

start=$(date +%s)
run_suite build ""
if [ "${1:-}" != "--no-sanitize" ]; then
  # LeakSanitizer is on: a test that leaks a buffer or a host block fails.
  # use_tls=0: thread-local storage is not a root of the leak scan. GCC 12's
  # LeakSanitizer sometimes reads a stale dynamic-TLS record of the main
  # thread (logged as "DTLS 6 at 0x...ae0-0x0008...") and its exit-time scan
  # crashes ("Tracer caught signal 11 ... LeakSanitizer has encountered a
  # fatal error"): 8 of 400 runs of `dynblocks predict` with 3 busy loops
  # beside it, 0 of 220 with use_tls=0. Fewer roots can only add reports,
  # never hide a leak, and dynblocks keeps nothing in thread-local storage
  # (the one block glibc's __tls_get_addr then leaves unreached is covered by
  # LeakSanitizer's built-in suppression, "Suppressions used: *tls_get_addr*").
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 LSAN_OPTIONS=use_tls=0 \
    UBSAN_OPTIONS=print_stacktrace=1 run_suite build-asan "" -DDYNB_SANITIZE=ON
  # ThreadSanitizer: only the library and the test that trains on two
  # threads, to keep CI time low.
  cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDYNB_WERROR=ON -DDYNB_TSAN=ON
  cmake --build build-tsan -j "$jobs" --target test_threads
  (cd build-tsan && ctest --output-on-failure -R '^test_threads$')
fi
# ---- fuzzing: ~30 s per target (DYNB_FUZZ_SECONDS) on top of the seeds and
# every past crasher, which ctest already replayed above.
if [ "${1:-}" != "--no-sanitize" ] && command -v clang >/dev/null; then
  scripts/fuzz.sh "${DYNB_FUZZ_SECONDS:-30}"
fi
echo "tests finished in $(($(date +%s) - start)) s"
