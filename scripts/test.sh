#!/usr/bin/env bash
# The test entry point (README, .ci/run): installs what is missing, builds
# with warnings as errors, runs every test; then the kernel-level tests again
# on Mesa's rusticl; then the same under AddressSanitizer +
# UndefinedBehaviorSanitizer; then the threads test under ThreadSanitizer;
# then a short run of every libFuzzer target (scripts/fuzz.sh; clang).
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

# ---- rusticl: the tests that run our kernels and CLBlast's, again on Mesa's
# rusticl (llvmpipe, a second OpenCL implementation: no fp64, at most 1024
# work-items per group, buffers kept alive by kernel arguments), with the
# build above. llvmpipe is a correctness platform and slow, so this is a
# subset: every op family against its reference (f64 cases skip: no fp64),
# layers, whole networks (blocks inside), the public API, two contexts on two
# threads, the runtime (every kernel family built for f32 without fp64;
# buffers not held by cached kernels) and divergence checks. Measured one
# test at a time on a loaded 2-core machine: 5.5 CPU minutes in all, 3.6 of
# them test_conv: an estimated 4 minutes with -j2 on 2 free cores.
# Left out: test_block (4 CPU minutes, over half of them its batch-64 28x28
# memory figures timing every convolution route; test_net still runs blocks
# forward and backward in whole networks), test_faults (10.6 CPU minutes of
# fault sweeps; its logic does not depend on the device, and what rusticl
# does differently with buffers is test_runtime's), the host-only tests (io,
# spec, tableau, tune) and the CLI, example, crash and parity tests, which
# run the same library code at sizes llvmpipe takes minutes for.
rusticl_tests='^test_(act|api|channel|conv|gemm|health|interp|layer|linear|loss|net|norm|optim|pool|rk|runtime|threads|timereg)$'
rusticl_pass() {
  local t0
  t0=$(date +%s)
  # Without the device every test would skip; CI installs it, so there a
  # missing device is an error.
  if ! RUSTICL_ENABLE=llvmpipe build/dynblocks devices --device llvmpipe >/dev/null 2>&1; then
    if [ "${CI:-}" = true ]; then
      echo "rusticl: no llvmpipe device (mesa-opencl-icd, scripts/install-deps.sh); failing" >&2
      return 1
    fi
    echo "rusticl: no llvmpipe device; the rusticl pass is skipped (CI fails here)"
    return 0
  fi
  (cd build && RUSTICL_ENABLE=llvmpipe DYNB_TEST_DEVICE=llvmpipe \
    ctest --output-on-failure -j "$jobs" -R "$rusticl_tests")
  echo "rusticl pass finished in $(($(date +%s) - t0)) s"
}

start=$(date +%s)
run_suite build ""
rusticl_pass
if [ "${1:-}" != "--no-sanitize" ]; then (
  # The sanitizer suites run on PoCL and see only PoCL's ICD: Mesa's
  # libRusticlOpenCL, loaded by the ICD loader into every process once
  # mesa-opencl-icd is installed, leaks blocks of its own (200 bytes in 2,
  # in the child processes of test_runtime's concurrent_starts_are_safe,
  # which exit soon after start-up), with or without use_tls=0.
  if [ -f /etc/OpenCL/vendors/pocl.icd ]; then
    export OCL_ICD_VENDORS=/etc/OpenCL/vendors/pocl.icd
  fi
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
  # use_sigaltstack=0: PoCL compiles kernels with LLVM on the calling thread,
  # and LLVM 15 replaces a thread's alternate signal stack that is smaller
  # than SIGSTKSZ + 64 KiB with one from malloc; at that thread's exit ASan
  # then munmaps LLVM's heap block and aborts ("failed to deallocate 0x134c0
  # (79040) bytes ... unable to unmap"; 79040 = 13504, glibc's SIGSTKSZ for
  # this CPU's AVX-512 state, + 65536). Every run of test_threads, the one
  # test that builds kernels on threads it ends, failed so on a 2-core AMD
  # EPYC at 19f398a as well; with this option it passes. Costs only ASan's
  # own stack-overflow reports (an overflow is still a crash).
  # The MPI tests (test_mpi, cli_train_mpi) override this with
  # detect_leaks=0: Open MPI's exit-time leaks cannot be suppressed by frames
  # that are only Open MPI's (tests/CMakeLists.txt says why).
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:use_sigaltstack=0 LSAN_OPTIONS=use_tls=0 \
    UBSAN_OPTIONS=print_stacktrace=1 run_suite build-asan "" -DDYNB_SANITIZE=ON
  # ThreadSanitizer: only the library and the test that trains on two
  # threads, to keep CI time low.
  cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDYNB_WERROR=ON -DDYNB_TSAN=ON
  cmake --build build-tsan -j "$jobs" --target test_threads
  (cd build-tsan && ctest --output-on-failure -R '^test_threads$')
) fi
# ---- fuzzing: ~30 s per target (DYNB_FUZZ_SECONDS) on top of the seeds and
# every past crasher, which ctest already replayed above.
if [ "${1:-}" != "--no-sanitize" ] && command -v clang >/dev/null; then
  scripts/fuzz.sh "${DYNB_FUZZ_SECONDS:-30}"
fi
echo "tests finished in $(($(date +%s) - start)) s"
