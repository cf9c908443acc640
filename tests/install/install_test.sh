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

# 1. CMake package: examples/CMakeLists.txt as an embedding project.
cmake -S "$src/examples" -B "$tmp/examples" -DCMAKE_PREFIX_PATH="$prefix" \
      > "$tmp/examples.log" || { cat "$tmp/examples.log"; exit 1; }
cmake --build "$tmp/examples" > "$tmp/examples-build.log" || { cat "$tmp/examples-build.log"; exit 1; }
run "$tmp/examples/minimal"
run "$tmp/examples/minimal_static"
run "$tmp/examples/embed"
if command -v gfortran > /dev/null; then
  [ -x "$tmp/examples/fortran_train" ] || { echo "gfortran present, fortran_train not built"; exit 1; }
  run "$tmp/examples/fortran_train"
fi
if ldd "$tmp/examples/minimal_static" | grep -q libdynblocks; then
  echo "minimal_static links libdynblocks.so"; exit 1
fi

# 2. pkg-config and plain compiler commands: shared (rpath to the prefix),
# then static (the private requirements make the link complete).
export PKG_CONFIG_PATH=$libdir/pkgconfig
cc=${CC:-cc}
shared_libs="$(pkg-config --libs dynblocks) -Wl,-rpath,$libdir"
static_libs=$(pkg-config --static --libs dynblocks | sed 's/-ldynblocks/-Wl,-Bstatic -ldynblocks -Wl,-Bdynamic/')
# shellcheck disable=SC2086
{
  $cc -std=c11 -o "$tmp/minimal_pc" "$src/examples/minimal.c" $(pkg-config --cflags dynblocks) $shared_libs
  $cc -std=c11 -o "$tmp/embed_pc_static" "$src/examples/embed.c" $(pkg-config --cflags dynblocks) \
      $static_libs
}
run "$tmp/minimal_pc"
run "$tmp/embed_pc_static"
if ldd "$tmp/embed_pc_static" | grep -q libdynblocks; then
  echo "embed_pc_static links libdynblocks.so"; exit 1
fi
if command -v gfortran > /dev/null; then
  # shellcheck disable=SC2086
  (cd "$tmp" && gfortran -std=f2018 -o fortran_pc "$src/examples/fortran/dynblocks.f90" \
       "$src/examples/fortran/train.f90" $shared_libs)
  run "$tmp/fortran_pc"
fi
# 3. MPI (libdynblocks_mpi), where this build has it: both ways, under
# mpirun -np 2 (root in containers, more ranks than cores on CI).
if [ -e "$libdir/libdynblocks_mpi.a" ]; then
  for f in include/dynblocks/mpi.h; do
    [ -e "$prefix/$f" ] || { echo "missing after install: $f"; exit 1; }
  done
  [ -e "$libdir/pkgconfig/dynblocks_mpi.pc" ] || { echo "missing: dynblocks_mpi.pc"; exit 1; }
  [ -x "$tmp/examples/mpi_join" ] || { echo "libdynblocks_mpi installed, mpi_join not built"; exit 1; }
  # shellcheck disable=SC2086
  $cc -std=c11 -o "$tmp/mpi_join_pc" "$src/examples/mpi_join.c" $(pkg-config --cflags dynblocks_mpi) \
      $(pkg-config --libs dynblocks_mpi)
  for p in "$tmp/examples/mpi_join" "$tmp/mpi_join_pc"; do
    echo "== mpirun -np 2 $p"
    out=$(OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 120 \
          mpirun -np 2 --oversubscribe "$p") || { echo "$out"; exit 1; }
    echo "$out"
    [ "$(grep -c "of 2 joined" <<<"$out")" = 2 ] || { echo "not both ranks joined"; exit 1; }
  done
fi
echo "install test passed"
