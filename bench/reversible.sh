#!/bin/bash
# Reversible blocks (issue 14): peak device memory against the number of
# steps per block, reconstruct's f32 drift against store, and throughput of
# reconstruct against checkpoint. Network (a)'s widths 16/32/64 (bench/specs/a.json)
# with leapfrog doublesym tv blocks, batch 64, 28x28 inputs. Every figure is a
# ratio against a baseline measured in this same script on the same machine.
#
# usage: bench/reversible.sh [BUILD_DIR]   (default build); prints two tables.
# SKIP_MEMORY=1 runs only the drift table; DRIFT_STEPS="4 8" and TRAIN_STEPS=20
# choose its rows; ACT=tanh gives the blocks a smooth activation. With relu, a
# rebuilt state a rounding away from the store one can sit on the other side of
# a kink (an activation input within ~1e-6 of 0), which changes that element's
# slope from 0 to 1: the gradients then differ by more than the rebuilt states
# do (measured below); tanh shows the rounding alone.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
bin=$build/dynblocks
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "# $(date -u '+%F %T') load: $(uptime | sed 's/.*load average: //')"

spec() { # $1: steps, $2: scheme, $3: layer; ACT: the blocks' activation (relu)
  local g="0" k
  for ((k = 1; k <= $1; k++)); do g="$g, $(python3 -c "print(4*$k/$1)")"; done
  local b=""
  for w in 16 32 64; do
    b="$b${b:+, }{\"width\": $w, \"layer\": \"$3\", \"norm\": \"tv\", \"act\": \"${ACT:-relu}\", \"scheme\": \"$2\", \"t_states\": [$g]}"
  done
  echo "{\"input\": {\"channels\": 1, \"height\": 28, \"width\": 28}, \"classes\": 10, \"open\": {\"width\": 16, \"norm\": \"batch\"}, \"blocks\": [$b], \"head_width\": 64}"
}

field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])['$1'])"; }

if [ -z "${SKIP_MEMORY:-}" ]; then
echo
echo "## peak device bytes (plan + parameters + optimiser), leapfrog doublesym tv, batch 64"
echo "steps  store_MB  checkpoint/store  reconstruct/store  reconstruct/checkpoint img/s"
for K in 4 8 16 32; do
  spec "$K" leapfrog doublesym >"$work/s$K.json"
  declare -A peak rate
  for m in store checkpoint reconstruct; do
    out=$("$bin" bench --spec "$work/s$K.json" --batch 64 --memory $m --iters 1 2>/dev/null)
    peak[$m]=$(echo "$out" | field peak_bytes)
    rate[$m]=$(echo "$out" | field train_img_per_s)
  done
  python3 -c "s,c,r=${peak[store]},${peak[checkpoint]},${peak[reconstruct]}; print('%5d  %8.1f  %16.2f  %17.2f  %28.2f' % ($K, s/1e6, c/s, r/s, ${rate[reconstruct]}/${rate[checkpoint]}))"
done
fi

echo
echo "## f32 drift of reconstruct against store (blocks' activation ${ACT:-relu}): rebuilt Y_0 error, gradient errors"
cc -O2 -I"$here/include" -I"$build/include" "$here/bench/reversible_drift.c" -L"$build" -ldynblocks \
  -Wl,-rpath,"$build" -lm -o "$work/drift"
tmpl=$(spec 1 leapfrog doublesym | python3 -c "import sys,re; print(re.sub(r'\"t_states\": \[[^]]*\]', '\"t_states\": [@T]', sys.stdin.read()))")
echo "grad_rel_err: max |g_reconstruct - g_store| over all tensors / max |g_store| of the network;"
echo "block_w_rel_err: the same per tensor, worst over the blocks' convolution weights"
echo "steps  trained_steps  rebuilt_Y0_err  grad_rel_err  block_w_rel_err"
(cd "$work" && for K in ${DRIFT_STEPS:-4 8 16 32 64}; do for T in 0 ${TRAIN_STEPS:-20}; do ./drift "$tmpl" $K $T; done; done) |
  while read -r K T r g w; do printf '%5d  %13d  %14s  %12s  %15s\n' "$K" "$T" "$r" "$g" "$w"; done
echo "# end $(date -u '+%T') load: $(uptime | sed 's/.*load average: //')"
