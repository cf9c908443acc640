#!/usr/bin/env bash
# A prepared GPU check for a machine that has a GPU but no package registry
# (the lent device machines: an Ubuntu-like CUDA image, no network).
#
#   --fetch DIR   where Debian's registry is reachable: downloads the .debs
#                 dynblocks needs to build and run there, and a manifest.
#   --run DIR     on the GPU machine: unpacks them (dpkg -x, no root) into a
#                 prefix, builds dynblocks against it, runs devices, selftest,
#                 the GEMM test, bench and the PyTorch parity test on the
#                 device, and writes one report with every command, its exit
#                 code, output and time. Never stops at a failing step.
#
# Run with --help for the flags. The report is the product: a step that fails
# or times out is recorded and the next one runs.
set -uo pipefail

self_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
self=$self_dir/$(basename "${BASH_SOURCE[0]}")
repo=$(cd "$self_dir/.." && pwd)

usage() {
  cat <<'EOF'
usage: scripts/device-check.sh --fetch DIR [--no-cmake]
       scripts/device-check.sh --run DIR [--out REPORT] [--device D] [flags]

--fetch DIR        download (apt-get download, no root) the .debs needed to
                   build and run dynblocks on a bare Debian-like machine into
                   DIR/build (OpenCL loader and headers, CLBlast, cmocka,
                   cJSON, zlib headers) and DIR/cmake (CMake and the libraries
                   its binary loads, used only where the machine has no CMake
                   >= 3.16), with DIR/MANIFEST.txt (sha256 of each file)
  --no-cmake       leave CMake out

--run DIR          unpack DIR's .debs into a prefix (never into /), build
                   dynblocks against it and check the device; writes ONE
                   report (markdown). Exit 0 when every step that ran passed.
  --out REPORT     the report (default WORK/report.md)
  --work WORK      prefix, build and caches (default build-devcheck in the
                   repository, which .gitignore covers); emptied first
  --device D       OpenCL device: index or name substring (default: the
                   first GPU, else the first device, as the CLI chooses)
  --budget SEC     total wall-clock budget, unpacking and building included
                   (default 540: a 600 s device call with a minute to spare);
                   every step runs under `timeout`, capped by its own limit
                   and by what is left; a step with under 5 s left is skipped
  --jobs N         build jobs (default: nproc)
  --bench-batch N  batch of the bench runs (default 64)
  --bench-iters N  timed iterations of each bench run (default 5)
  --cap-scale N    multiply every step's own limit by N (slow devices, e.g.
                   PoCL on a shared CPU; the budget still bounds the total)
  --python PY      interpreter for the parity test (default: the first of
                   python3 on PATH and /usr/bin/python3 that imports torch)
  --parity-only S  run only the parity specs whose name contains S

Typical use with the device tool: here, `scripts/device-check.sh --fetch
build-debs`; there, with build-debs carried: `scripts/device-check.sh --run
build-debs --out $OUT/report.md` under a 600 s limit.
EOF
}

die() { echo "device-check: $*" >&2; exit 2; }

# ---------------------------------------------------------------- fetch ----

# Dependency options: hard dependencies only. Recommends/Suggests are not
# needed to build or run; Conflicts/Breaks/Replaces are not things to fetch.
apt_dep_opts=(--no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances)

# Prints "PKG<TAB>cand cand ..." per dependency (an OR group, a virtual
# package expanded to its providers) of each package named.
dep_groups() {
  apt-cache depends "${apt_dep_opts[@]}" "$@" 2>/dev/null | awk '
    function flush() { if (grp != "") print pkg "\t" substr(grp, 2); grp = "" }
    /^[^ ]/ { flush(); pkg = $1; cont = 0; next }
    /^ [ |](Pre)?Depends: / {
      if (!cont) flush()
      if ($2 !~ /^</) grp = grp " " $2
      cont = (substr($0, 2, 1) == "|"); next }
    /^    [^ ]/ { grp = grp " " $1; next }
    END { flush() }'
}

# closure STOPFILE ROOT...: prints the packages reachable from the roots
# through hard dependencies, taking the first alternative of each OR group
# (the one apt installs when none is present) unless one is already in the
# set or the stop set, and not descending into packages of the stop set.
closure() {
  local stop=$1; shift
  local -A have=() stopset=()
  local p cands c pick
  while read -r p; do [ -n "$p" ] && stopset[$p]=1; done <"$stop"
  local todo=("$@")
  for p in "$@"; do have[$p]=1; done
  while ((${#todo[@]})); do
    local next=()
    while IFS=$'\t' read -r _ cands; do
      pick=""
      for c in $cands; do
        if [ -n "${have[$c]:-}" ] || [ -n "${stopset[$c]:-}" ]; then pick=-; break; fi
      done
      [ "$pick" = - ] && continue
      pick=${cands%% *}
      [ -n "$pick" ] || continue
      have[$pick]=1
      next+=("$pick")
    done < <(dep_groups "${todo[@]}")
    todo=("${next[@]}")
  done
  for p in "${!have[@]}"; do echo "$p"; done | sort
}

fetch() {
  local dir=$1 with_cmake=$2
  if ! command -v apt-get >/dev/null || ! command -v apt-cache >/dev/null; then
    die "--fetch needs apt-get and apt-cache (a Debian-like machine)"
  fi
  [ "$(dpkg --print-architecture)" = amd64 ] ||
    die "--fetch: this machine's packages are $(dpkg --print-architecture), the GPU machine is amd64"
  mkdir -p "$dir" || die "--fetch: cannot create $dir"
  dir=$(cd "$dir" && pwd)
  rm -rf "$dir/build" "$dir/cmake" "$dir/MANIFEST.txt"
  mkdir -p "$dir/build" "$dir/cmake"

  # What the GPU machine is assumed to have: a C compiler's libc headers
  # (libc6-dev: nvcc needs a host compiler), the C++ runtime (libstdc++6:
  # CUDA and PyTorch need it) and dpkg (every Debian-like system; it pulls
  # zlib1g, the C library and the other base libraries). Their closure is
  # never fetched: unpacked beside a newer system these older copies would
  # only shadow it. A library of the base that a -dev package's link names
  # (zlib1g-dev's libz.so) is relinked to the system's copy by --run.
  local base_roots=(libc6-dev libstdc++6 dpkg)
  # Packages the dependency metadata names but nothing here runs: maintainer
  # and helper scripts (perl, procps, init-system-helpers, usrmerge) of
  # cmake-data and libraries. Not descended into either, so a library
  # reached only through them is not fetched (checked: `ldd` of the cmake
  # binary names none).
  local skip=(perl perl-base procps init-system-helpers usrmerge usr-is-merged debconf)
  local stop work
  work=$(mktemp -d) || die "--fetch: mktemp failed"
  : >"$work/none"
  closure "$work/none" "${base_roots[@]}" >"$work/base"
  { cat "$work/base"; printf '%s\n' "${skip[@]}"; } >"$work/stop"
  stop="$work/stop"

  local build_roots=(ocl-icd-opencl-dev ocl-icd-libopencl1 opencl-headers libclblast-dev
                     libcmocka-dev libcjson-dev zlib1g-dev)
  local cmake_roots=(cmake)
  local -a groups=(build)
  closure "$stop" "${build_roots[@]}" >"$work/build.list"
  if [ "$with_cmake" = 1 ]; then
    groups+=(cmake)
    # CMake's own closure, less what the build group already has.
    cat "$stop" "$work/build.list" >"$work/stop2"
    closure "$work/stop2" "${cmake_roots[@]}" >"$work/cmake.list"
  fi

  local g p ver
  local -a sandbox=()
  # As root, apt hands downloads to the _apt user, who may not write DIR.
  [ "$(id -u)" -eq 0 ] && sandbox=(-o APT::Sandbox::User=root)
  for g in "${groups[@]}"; do
    local specs=()
    while read -r p; do
      ver=$(apt-cache policy "$p" | awk '/Candidate:/ {print $2}')
      if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
        die "--fetch: no installable version of $p (run apt-get update?)"
      fi
      specs+=("$p=$ver")
    done <"$work/$g.list"
    echo "fetching $g: ${specs[*]}"
    (cd "$dir/$g" && apt-get -q "${sandbox[@]}" download "${specs[@]}") ||
      die "--fetch: apt-get download failed for group $g"
  done

  {
    echo "# dynblocks device-check packages, fetched $(date -u +%FT%TZ) on $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "# assumed present on the GPU machine (not fetched): the closure of ${base_roots[*]}"
    echo "# not needed to build or run (not fetched, not descended into): ${skip[*]}"
    echo "# group package version sha256 file"
    for g in "${groups[@]}"; do
      for f in "$dir/$g"/*.deb; do
        echo "$g $(dpkg-deb -f "$f" Package) $(dpkg-deb -f "$f" Version)" \
             "$(sha256sum "$f" | cut -d' ' -f1) $g/$(basename "$f")"
      done
    done
  } >"$dir/MANIFEST.txt"
  rm -rf "$work"
  echo "fetched $(grep -vc '^#' "$dir/MANIFEST.txt") packages ($(du -sh "$dir" | cut -f1)) into $dir; see $dir/MANIFEST.txt"
}

# ------------------------------------------------------------------ run ----

report=""
deadline=0
step_no=0
failed=0
summary=()

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# Appends a step's log to the report: at most 400 lines (the first 100 and
# the last 300), the full log stays under WORK/logs.
append_log() {
  local log=$1 n
  n=$(wc -l <"$log")
  echo '~~~~'
  if ((n > 400)); then
    head -n 100 "$log"
    echo "[... $((n - 400)) lines left out; full log: $log ...]"
    tail -n 300 "$log"
  else
    cat "$log"
  fi
  echo '~~~~'
}

# record NAME RC SECONDS STATUS CMDTEXT LOG
record() {
  local name=$1 rc=$2 secs=$3 status=$4 cmd=$5 log=$6
  {
    echo
    echo "## $step_no. $name"
    echo
    echo "\`$cmd\`"
    echo
    echo "exit $rc, ${secs} s, $status"
    echo
    [ -n "$log" ] && append_log "$log"
  } >>"$report"
  summary+=("| $step_no | $name | $rc | $secs | $status |")
  echo "device-check: $step_no. $name: exit $rc, ${secs} s, $status" >&2
}

# step NAME CAP CMD...: runs CMD under timeout, capped by CAP seconds and by
# the budget left, with its output captured; records it; returns its code.
step() {
  local name=$1 cap=$2; shift 2
  step_no=$((step_no + 1))
  local left=$((deadline - EPOCHSECONDS))
  local t=$((cap * cap_scale))
  ((left < t)) && t=$left
  local cmd
  cmd=$(printf '%q ' "$@")
  cmd=${cmd% }
  if ((t < 5)); then
    record "$name" - 0 "SKIPPED: budget spent (${left} s left)" "$cmd" ""
    failed=1
    return 125
  fi
  local log
  log="$work/logs/$(printf %02d "$step_no")-${name//[^A-Za-z0-9_.-]/_}.log"
  local t0 t1 rc status
  t0=$(now)
  timeout -k 10 "$t" "$@" >"$log" 2>&1 </dev/null
  rc=$?
  t1=$(now)
  case $rc in
    0) status=ok ;;
    124 | 137) status=TIMEOUT ;;
    *) status=FAILED ;;
  esac
  [ "$rc" -eq 0 ] || failed=1
  record "$name" "$rc" "$(elapsed "$t0" "$t1")" "$status (limit $t s)" "$cmd" "$log"
  return "$rc"
}

# note NAME STATUS TEXT: a step that is a finding, not a command.
note() {
  step_no=$((step_no + 1))
  local log
  log="$work/logs/$(printf %02d "$step_no")-note.log"
  printf '%s\n' "$3" >"$log"
  record "$1" - 0 "$2" "(no command)" "$log"
}

# The library directories of a prefix (multiarch or not), colon-joined.
prefix_libdirs() {
  find "$1" -name 'lib*.so*' \( -type f -o -type l \) -printf '%h\n' 2>/dev/null | sort -u | paste -sd:
}

ldconfig_path() {
  local lc
  lc=$(command -v ldconfig || echo /sbin/ldconfig)
  "$lc" -p 2>/dev/null | awk -v s="$1" '$1 == s && /x86-64/ {print $NF; exit}'
}

# Unpacks every .deb of DIR/GROUP into PREFIX; relinks a dangling lib*.so
# link (a -dev package whose runtime library is the system's, e.g.
# zlib1g-dev's libz.so) to the system's library of that soname.
unpack() {
  local dir=$1 group=$2 prefix=$3 f l target soname sys
  mkdir -p "$prefix"
  for f in "$dir/$group"/*.deb; do
    [ -e "$f" ] || continue
    echo "dpkg -x $(basename "$f")"
    dpkg -x "$f" "$prefix" || { echo "dpkg -x failed: $f"; return 1; }
  done
  while read -r l; do
    target=$(basename "$(readlink "$l")")
    soname=$(echo "$target" | sed -E 's/(\.so\.[0-9]+).*/\1/')
    sys=$(ldconfig_path "$soname")
    if [ -n "$sys" ]; then
      ln -sf "$sys" "$l"
      echo "relinked $l -> $sys (the system's $soname)"
    else
      echo "WARNING: $l -> $target dangles and the system has no $soname"
    fi
  done < <(find "$prefix" -xtype l -name 'lib*.so*')
}

verify_manifest() {
  local dir=$1
  [ -f "$dir/MANIFEST.txt" ] || { echo "no $dir/MANIFEST.txt"; return 1; }
  grep -v '^#' "$dir/MANIFEST.txt" | awk '{print $4 "  " $5}' | (cd "$dir" && sha256sum -c --quiet -) &&
    echo "$(grep -vc '^#' "$dir/MANIFEST.txt") files match MANIFEST.txt"
}

machine_info() {
  echo "date: $(date -u +%FT%TZ)"
  echo "host: $(uname -srm)"
  [ -r /etc/os-release ] && echo "os: $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "user: uid $(id -u)"
  echo "cpus: $(nproc 2>/dev/null)"
  echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo 2>/dev/null)"
  echo "cc: $(cc --version 2>/dev/null | head -1 || echo none)"
  echo "cmake: $(command -v cmake || echo none) $(cmake --version 2>/dev/null | head -1)"
  echo "make: $(command -v make || echo none); ninja: $(command -v ninja || echo none)"
  echo "python3: $(command -v python3 || echo none) $(python3 --version 2>&1)"
  echo "repository: $repo"
  if command -v git >/dev/null && git -C "$repo" rev-parse HEAD >/dev/null 2>&1; then
    echo "commit: $(git -C "$repo" rev-parse HEAD), $(git -C "$repo" status --short | wc -l) changed files"
  fi
  if command -v nvidia-smi >/dev/null; then
    echo "nvidia-smi -L:"
    timeout 20 nvidia-smi -L 2>&1
  fi
}

# Lists the OpenCL vendors present and makes WORK/prefix's vendors folder
# (OCL_ICD_VENDORS): a link to each of the system's /etc/OpenCL/vendors/*.icd,
# plus an .icd naming libnvidia-opencl.so.1 or ROCm's libamdocl64.so by path
# where the driver library is there but the system has no .icd for it (CUDA
# container images often ship the library without the file).
opencl_vendors() {
  local vendors=$1 f lib
  mkdir -p "$vendors"
  echo "/etc/OpenCL/vendors:"
  if ls /etc/OpenCL/vendors/*.icd >/dev/null 2>&1; then
    for f in /etc/OpenCL/vendors/*.icd; do
      echo "  $(basename "$f"): $(tr -d '\n' <"$f")"
      ln -sf "$f" "$vendors/$(basename "$f")"
    done
  else
    echo "  (none)"
  fi
  echo "libnvidia-opencl:"
  local nv
  nv=$( { ldconfig_path libnvidia-opencl.so.1
          find /usr/local/nvidia /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib \
            -maxdepth 3 -name 'libnvidia-opencl.so.1' 2>/dev/null; } | head -1)
  echo "  ${nv:-(not found)}"
  if [ -n "$nv" ] && ! grep -qs nvidia-opencl /etc/OpenCL/vendors/*.icd; then
    echo "$nv" >"$vendors/nvidia-devcheck.icd"
    echo "  no system .icd names it: wrote $vendors/nvidia-devcheck.icd"
  fi
  # Where the driver is a mount outside the loader's path, the library and
  # its own dependencies (libcuda) need that folder on LD_LIBRARY_PATH.
  if [ -n "$nv" ] && [ -z "$(ldconfig_path libnvidia-opencl.so.1)" ]; then
    echo "  not in ldconfig's cache: $(dirname "$nv") goes on LD_LIBRARY_PATH"
    echo "NVLIBDIR=$(dirname "$nv")"
  fi
  echo "ROCm:"
  lib=$(find /opt -maxdepth 4 -path '/opt/rocm*' -name libamdocl64.so 2>/dev/null | head -1)
  echo "  ${lib:-(not found)}"
  if [ -n "$lib" ] && ! grep -qs amdocl /etc/OpenCL/vendors/*.icd; then
    echo "$lib" >"$vendors/amdocl64-devcheck.icd"
    echo "  no system .icd names it: wrote $vendors/amdocl64-devcheck.icd"
  fi
  echo "OCL_ICD_VENDORS=$vendors:"
  ls -l "$vendors"
}

# Shows where the build's dependencies came from: CMake's cache entries, the
# headers the compiler actually read (its dependency files), the libraries
# the binaries load; fails if CLBlast, cJSON, cmocka or the OpenCL loader
# and headers did not come from the prefix.
provenance() {
  local build=$1 prefix=$2 bad=0 v e
  echo "CMake cache (CMAKE_PREFIX_PATH=$prefix/usr):"
  for e in OpenCL_LIBRARY OpenCL_INCLUDE_DIR CLBLAST_LIBRARY CLBLAST_INCLUDE_DIR CJSON_LIBRARY \
           CMOCKA_LIBRARY CMOCKA_INCLUDE_DIR ZLIB_LIBRARY_RELEASE ZLIB_INCLUDE_DIR; do
    v=$(sed -n "s/^$e:[A-Z]*=//p" "$build/CMakeCache.txt")
    case $e:$v in
      ZLIB*) echo "  $e=$v" ;;
      *:"$prefix"/*) echo "  $e=$v  (prefix)" ;;
      *) echo "  $e=$v  NOT FROM THE PREFIX"; bad=1 ;;
    esac
  done
  echo "headers the compiler read (dependency files):"
  local h
  for h in CL/cl.h clblast_c.h cjson/cJSON.h cmocka.h zlib.h; do
    v=$(find "$build" -type f -name '*.d' -exec grep -ho "[^ ]*/$h" {} + 2>/dev/null | sort -u | paste -sd' ')
    echo "  $h: ${v:-(not found in the dependency files)}"
    case $h:$v in
      zlib.h:*) ;;
      *:"$prefix"/*) ;;
      *) bad=1 ;;
    esac
  done
  local bin
  for bin in "$build/dynblocks" "$build/tests/test_gemm"; do
    [ -x "$bin" ] || continue
    echo "readelf -d $bin (RUNPATH):"
    readelf -d "$bin" 2>/dev/null | grep -E 'RUNPATH|RPATH' | sed 's/^/  /'
    echo "ldd $bin:"
    ldd "$bin" | sed 's/^/  /'
  done
  local pair libs
  for pair in dynblocks:libclblast.so dynblocks:libcjson.so dynblocks:libOpenCL.so \
              tests/test_gemm:libclblast.so tests/test_gemm:libcmocka.so; do
    bin=$build/${pair%%:*} v=${pair#*:}
    # Not `ldd | grep -q`: grep's early exit can kill ldd (SIGPIPE), which
    # pipefail turns into a false "not from the prefix".
    libs=$(ldd "$bin" 2>/dev/null)
    grep -q "$v.*=> $prefix/" <<<"$libs" || { echo "  $v NOT FROM THE PREFIX ($bin)"; bad=1; }
  done
  ((bad == 0)) && echo "every dependency checked came from the prefix"
  return "$bad"
}

cmake_version_ok() {
  local v
  v=$("$1" --version 2>/dev/null | awk 'NR == 1 {print $3}')
  [ -n "$v" ] || return 1
  printf '%s\n3.16\n' "$v" | sort -V -C -r
}

# Importing torch takes seconds: bounded by the budget left too.
find_torch_python() {
  local py t
  for py in python3 /usr/bin/python3; do
    command -v "$py" >/dev/null || continue
    t=$((deadline - EPOCHSECONDS))
    ((t > 60)) && t=60
    ((t < 5)) && return 1
    timeout "$t" "$py" -c 'import torch' >/dev/null 2>&1 && { command -v "$py"; return 0; }
  done
  return 1
}

run_check() {
  local dir=$1 out=$2 work_arg=$3 device=$4 budget=$5 jobs=$6 bbatch=$7 biters=$8 py=$9
  local ponly=${10}
  [ -d "$dir" ] || die "--run: $dir is not a folder (make it with --fetch)"
  dir=$(cd "$dir" && pwd)
  work=${work_arg:-$repo/build-devcheck}
  case $work in /|/usr|/usr/*|/etc|/etc/*) die "--work $work: refusing a system folder";; esac
  # Emptied first, but only a folder this script made (its marker file): a
  # mistyped --work must not delete anything else.
  if [ -e "$work" ] && [ -n "$(ls -A "$work" 2>/dev/null)" ] && [ ! -e "$work/.device-check-work" ]; then
    die "--work $work: not empty and not made by this script; give a new folder"
  fi
  rm -rf "$work"
  mkdir -p "$work/logs" || die "--run: cannot create $work"
  : >"$work/.device-check-work"
  work=$(cd "$work" && pwd)
  report=${out:-$work/report.md}
  if ! mkdir -p "$(dirname "$report")" || ! : >"$report"; then die "--out $report: cannot write"; fi
  deadline=$((EPOCHSECONDS + budget))
  local start=$EPOCHREALTIME

  local prefix=$work/prefix cprefix=$work/prefix-cmake build=$work/build
  {
    echo "# dynblocks device check"
    echo
    echo "\`scripts/device-check.sh ${run_argv[*]}\`, budget $budget s."
    echo
    echo '~~~~'
    machine_info
    echo '~~~~'
  } >>"$report"

  step "verify the fetched packages" 30 "$self" --internal verify_manifest "$dir"
  step "unpack into $prefix (dpkg -x)" 60 "$self" --internal unpack "$dir" build "$prefix"

  # CMake: the machine's where it is new enough, else the fetched one, which
  # loads its own libraries through a wrapper (only cmake sees them).
  local cmake_bin
  cmake_bin=$(command -v cmake || true)
  if [ -n "$cmake_bin" ] && cmake_version_ok "$cmake_bin"; then
    note "cmake" "ok" "using the machine's $cmake_bin ($("$cmake_bin" --version | head -1))"
  elif ls "$dir"/cmake/*.deb >/dev/null 2>&1; then
    step "unpack CMake into $cprefix (dpkg -x)" 60 "$self" --internal unpack "$dir" cmake "$cprefix"
    mkdir -p "$cprefix/bin"
    cat >"$cprefix/bin/cmake" <<EOF
#!/bin/sh
LD_LIBRARY_PATH='$(prefix_libdirs "$cprefix")'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH} exec '$cprefix/usr/bin/cmake' "\$@"
EOF
    chmod +x "$cprefix/bin/cmake"
    cmake_bin=$cprefix/bin/cmake
    step "fetched cmake runs" 30 "$cmake_bin" --version
  else
    failed=1
    note "cmake" "FAILED" "no cmake >= 3.16 on PATH (${cmake_bin:-none}) and none fetched (--fetch without --no-cmake)"
    cmake_bin=cmake
  fi

  # The environment every later step runs in: the prefix's libraries and the
  # vendors folder, which links the system's ICDs.
  local vlog="$work/logs/vendors.txt" nvdir
  opencl_vendors "$prefix/etc/OpenCL/vendors" >"$vlog" 2>&1
  nvdir=$(sed -n 's/^NVLIBDIR=//p' "$vlog")
  step_no=$((step_no + 1))
  record "OpenCL vendors" 0 0 "recorded" \
    "(by the script: /etc/OpenCL/vendors/*.icd, libnvidia-opencl.so.1 in ldconfig's cache or the driver folders, ROCm's libamdocl64.so under /opt)" "$vlog"
  local libdirs
  libdirs=$(prefix_libdirs "$prefix")
  export LD_LIBRARY_PATH="$libdirs${nvdir:+:$nvdir}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export OCL_ICD_VENDORS="$prefix/etc/OpenCL/vendors"
  # The project's CMakeLists finds cJSON's library but not its header: the
  # compiler's search path has to hold the prefix's include folder.
  # (CMake links every library by its full path, so no LIBRARY_PATH: with
  # one, gcc would report the prefix as an implicit link folder and CMake
  # would leave it out of the binaries' RUNPATH.)
  export CPATH="$prefix/usr/include${CPATH:+:$CPATH}"
  # Kernel and tuning caches start empty: the first command that compiles
  # kernels (selftest, else the first bench) pays the device compiler once.
  export XDG_CACHE_HOME="$work/cache"
  export DYNBLOCKS_TUNE_CACHE="$work/cache/tune.txt"
  mkdir -p "$XDG_CACHE_HOME"
  {
    echo
    echo "Environment of the steps below:"
    echo
    echo '~~~~'
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    echo "OCL_ICD_VENDORS=$OCL_ICD_VENDORS"
    echo "CPATH=$CPATH"
    echo "XDG_CACHE_HOME=$XDG_CACHE_HOME"
    echo "DYNBLOCKS_TUNE_CACHE=$DYNBLOCKS_TUNE_CACHE"
    echo '~~~~'
  } >>"$report"

  local gen=()
  command -v make >/dev/null || { command -v ninja >/dev/null && gen=(-G Ninja); }
  step configure 90 "$cmake_bin" -S "$repo" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_PREFIX_PATH="$prefix/usr" -DDYNB_BUILD_TESTS=ON
  step build 240 "$cmake_bin" --build "$build" -j "$jobs" --target dynblocks_cli test_gemm
  step "dependencies came from the prefix" 30 "$self" --internal provenance "$build" "$prefix"

  local bin=$build/dynblocks dev=()
  [ -n "$device" ] && dev=(--device "$device")
  step devices 60 "$bin" devices "${dev[@]}"

  # selftest: recorded as not available where the CLI has no such command.
  if timeout 20 "$bin" selftest --help >/dev/null 2>&1; then
    step "selftest --quick" 150 "$bin" selftest --quick "${dev[@]}"
  else
    note "selftest" "selftest: command not available" \
      "selftest: command not available (\`dynblocks selftest --help\` did not exit 0)"
  fi

  # The GEMM test (CLBlast against the plain-C reference, edge sizes); tests
  # take their device from DYNB_TEST_DEVICE, else the library's default.
  local tenv=()
  [ -n "$device" ] && tenv=(DYNB_TEST_DEVICE="$device")
  step "test_gemm" 90 env "${tenv[@]}" "$build/tests/test_gemm"

  local s
  for s in a b c d; do
    step "bench $s.json" 90 "$bin" bench --spec "$repo/bench/specs/$s.json" --batch "$bbatch" \
      --iters "$biters" "${dev[@]}"
  done

  # Parity against PyTorch: the test runs the CLI, which takes its device
  # from DYNBLOCKS_DEVICE (else its default, the first GPU).
  if [ -z "$py" ]; then py=$(find_torch_python || true); fi
  if [ -z "$py" ]; then
    note "parity" "SKIPPED: PyTorch not available" \
      "parity: skipped, neither python3 on PATH nor /usr/bin/python3 imports torch (or the budget ran out probing)"
  else
    local only=() penv=(PYTHONUNBUFFERED=1)
    [ -n "$ponly" ] && only=(--only "$ponly")
    [ -n "$device" ] && penv+=(DYNBLOCKS_DEVICE="$device")
    step "parity (torch: $py)" 100000 env "${penv[@]}" \
      "$py" "$repo/tests/parity/parity_test.py" "$bin" --keep "$work/parity" "${only[@]}"
  fi

  {
    echo
    echo "## Summary"
    echo
    echo "| # | step | exit | s | status |"
    echo "| - | - | - | - | - |"
    printf '%s\n' "${summary[@]}"
    echo
    echo "total $(elapsed "$start" "$EPOCHREALTIME") s of a $budget s budget; $( ((failed)) && echo "SOME STEPS FAILED" || echo "every step passed")"
  } >>"$report"
  echo "device-check: report in $report" >&2
  return "$failed"
}

# ----------------------------------------------------------------- main ----

cap_scale=1 internal_args=()
mode="" dir="" out="" work_arg="" device="" budget=540 jobs="" bbatch=64 biters=5 py="" ponly=""
with_cmake=1
run_argv=("$@")
need() { if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value (see --help)"; fi; }
posint() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer, got '$2'"; }
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --internal) need "$@"; mode=internal; dir=$2; shift 2; internal_args=("$@"); break ;;
    --fetch | --run) need "$@"; [ -z "$mode" ] || die "give one of --fetch and --run"
                     mode=${1#--}; dir=$2; shift ;;
    --no-cmake) with_cmake=0 ;;
    --out) need "$@"; out=$2; shift ;;
    --work) need "$@"; work_arg=$2; shift ;;
    --device) need "$@"; device=$2; shift ;;
    --budget) need "$@"; posint "$1" "$2"; budget=$2; shift ;;
    --jobs) need "$@"; posint "$1" "$2"; jobs=$2; shift ;;
    --bench-batch) need "$@"; posint "$1" "$2"; bbatch=$2; shift ;;
    --bench-iters) need "$@"; posint "$1" "$2"; biters=$2; shift ;;
    --python) need "$@"; py=$2; shift ;;
    --cap-scale) need "$@"; posint "$1" "$2"; cap_scale=$2; shift ;;
    --parity-only) need "$@"; ponly=$2; shift ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
case $mode in
  internal)
    # Steps that are functions of this script run as their own process, so
    # that `timeout` can bound them and the report names them readably.
    fn=$dir
    case $fn in
      verify_manifest | unpack | provenance) "$fn" "${internal_args[@]}"; exit ;;
      *) die "--internal: unknown function '$fn'" ;;
    esac ;;
  fetch) fetch "$dir" "$with_cmake" ;;
  run)
    for t in timeout dpkg readelf ldd; do
      command -v "$t" >/dev/null || die "--run needs $t"
    done
    [ -n "$jobs" ] || jobs=$(nproc 2>/dev/null || echo 2)
    run_check "$dir" "$out" "$work_arg" "$device" "$budget" "$jobs" "$bbatch" "$biters" "$py" "$ponly"
    ;;
  *) usage >&2; exit 2 ;;
esac
