#!/usr/bin/env bash
# Installs dynblocks from a build tree into a temporary prefix, checks what
# landed there, then builds the examples against the installed copy twice:
# as a CMake project with find_package(dynblocks), and with plain compiler
# commands and pkg-config (shared and static); runs every program built.
# Usage: install_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
# The examples' kernel cache: the one the tests share (safe under
# concurrent use), so that a cold cache is paid once per build tree.
export XDG_CACHE_HOME=$tmp/cache
mkdir -p "$XDG_CACHE_HOME" "$build/program-cache"
ln -s "$build/program-cache" "$XDG_CACHE_HOME/dynblocks"

cmake --install "$build" --prefix "$prefix" > "$tmp/install.log"
libdir=$(find "$prefix" -name libdynblocks.a -printf '%h\n')

# What an embedding code needs, and nothing of the library's insides.
for f in include/dynblocks/dynblocks.h include/dynblocks/cl.h bin/dynblocks; do
  [ -e "$prefix/$f" ] || { echo "missing after install: $f"; exit 1; }
done
for f in libdynblocks.a libdynblocks.so pkgconfig/dynblocks.pc cmake/dynblocks/dynblocksConfig.cmake \
         cmake/dynblocks/dynblocksConfigVersion.cmake cmake/dynblocks/dynblocksTargets.cmake; do
  [ -e "$libdir/$f" ] || { echo "missing after install: $libdir/$f"; exit 1; }
done
soname=$(objdump -p "$libdir/libdynblocks.so" | awk '/SONAME/ {print $2}')
[[ $soname == libdynblocks.so.* ]] || { echo "unexpected SONAME '$soname'"; exit 1; }
[ -e "$libdir/$soname" ] || { echo "no $soname link"; exit 1; }
leaked=$(nm -D --defined-only "$libdir/libdynblocks.so" | awk '$2 == "T" && $3 !~ /^dynb_[a-z]/ {print $3}')
[ -z "$leaked" ] || { echo "exported beyond the public API: $leaked"; exit 1; }
if grep -rq '"runtime/\|"model/\|"train/' "$prefix/include"; then
  echo "installed headers include private ones"; exit 1
fi

run() { echo "== $*"; "$@"; }

# 1. CMake package.
cmake -S "$src/tests/install/consumer" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$prefix" \
      -DDYNB_EXAMPLES="$src/examples" > "$tmp/consumer.log" || { cat "$tmp/consumer.log"; exit 1; }
cmake --build "$tmp/consumer" > "$tmp/consumer-build.log" || { cat "$tmp/consumer-build.log"; exit 1; }
run "$tmp/consumer/minimal_shared"
run "$tmp/consumer/minimal_static"
if ldd "$tmp/consumer/minimal_static" | grep -q libdynblocks; then
  echo "minimal_static links libdynblocks.so"; exit 1
fi

# 2. pkg-config and the plain compiler: shared (rpath to the prefix), then
# static (the private requirements make the link complete).
export PKG_CONFIG_PATH=$libdir/pkgconfig
cc=${CC:-cc}
# shellcheck disable=SC2046
$cc -std=c11 -o "$tmp/minimal_pc" "$src/examples/minimal.c" $(pkg-config --cflags --libs dynblocks) \
    -Wl,-rpath,"$libdir"
run "$tmp/minimal_pc"
static_libs=$(pkg-config --static --libs dynblocks | sed 's/-ldynblocks/-Wl,-Bstatic -ldynblocks -Wl,-Bdynamic/')
# shellcheck disable=SC2086
$cc -std=c11 -o "$tmp/minimal_pc_static" "$src/examples/minimal.c" $(pkg-config --cflags dynblocks) \
    $static_libs
run "$tmp/minimal_pc_static"
if ldd "$tmp/minimal_pc_static" | grep -q libdynblocks; then
  echo "minimal_pc_static links libdynblocks.so"; exit 1
fi
echo "install test passed"
