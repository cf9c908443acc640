#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang and runs each for
# SECONDS (default 30). New inputs go to a work corpus in the build folder,
# never into the committed seeds; a crash or hang leaves its input in
# BUILD/artifacts/<target>/ and fails the script: add it to
# tests/fuzz/regress/<target>/ with the fix. Last line per target: libFuzzer's
# "Done N runs" count.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET ...]   (BUILD: DYNB_FUZZ_BUILD, default build-fuzz)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(spec safetensors idx cifar cli)
dir=${DYNB_FUZZ_BUILD:-build-fuzz}
CC=clang cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDYNB_FUZZ=ON \
  -DDYNB_BUILD_TESTS=OFF -DDYNB_WERROR=ON >/dev/null
cmake --build "$dir" -j "$(nproc 2>/dev/null || echo 2)" --target fuzz_all >/dev/null
failed=0
for t in "${targets[@]}"; do
  work="$dir/corpus-work/$t" art="$dir/artifacts/$t"
  mkdir -p "$work" "$art"
  log="$dir/fuzz-$t.log"
  # -timeout: an input that takes 10 s is a hang; -rss_limit_mb: one that
  # needs 2 GiB is a memory bomb. Both count as findings.
  if "$dir/tests/fuzz/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$art/" "$work" tests/fuzz/corpus/"$t" \
    tests/fuzz/regress/"$t" >"$log" 2>&1; then
    echo "fuzz $t: $(grep -E '^Done [0-9]+ runs' "$log" || tail -n 1 "$log")"
  else
    echo "fuzz $t: FAILED (log $log, inputs in $art)"
    tail -n 30 "$log"
    failed=1
  fi
done
exit $failed
