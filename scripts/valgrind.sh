#!/usr/bin/env bash
# Runs every cmocka test under valgrind (memcheck, definite leaks are errors)
# with the suppressions for the system's own reports. Slow (PoCL under
# valgrind): minutes per test. Usage: scripts/valgrind.sh [BUILD_DIR] [REGEX]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
pattern=${2:-.}
fails=0
for t in "$build"/tests/test_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  [[ $name =~ $pattern ]] || continue
  if (cd "$build" && DYNB_TEST_CACHE_DIR="$PWD/program-cache" valgrind -q --error-exitcode=99 \
        --leak-check=full --errors-for-leak-kinds=definite \
        --suppressions="$OLDPWD/tests/valgrind.supp" "tests/$name" > "valgrind-$name.log" 2>&1); then
    echo "valgrind ok   $name"
  else
    echo "valgrind FAIL $name (see $build/valgrind-$name.log)"
    fails=$((fails + 1))
  fi
done
exit $((fails > 0))
