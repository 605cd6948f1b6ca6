#!/usr/bin/env bash
# tools/arm64_env.sh [CACHE_DIR]
#
# Build an emulated ARM64 (aarch64) CPython 3.11 environment on an x86_64
# Debian bookworm host, for running exported artifacts (ONNX / ONNX Runtime,
# LiteRT, MNN, OpenVINO) under qemu-aarch64 user mode (tests/test_arm64.py).
# Emulation checks results, never speed (20-80x slower than native).
#
# qemu comes from bookworm-backports (10.x): bookworm's own 7.2 mis-emulates
# int8 dot-product/matmul instructions on -cpu max and needs a fake
# /proc/cpuinfo for ONNX Runtime to import.
#
# Nothing on the host is changed: apt runs with a private configuration,
# state and cache under CACHE_DIR (no `dpkg --add-architecture`, no edits to
# /etc/apt, no package installs); every .deb is unpacked with `dpkg -x`.
#
# Layout of CACHE_DIR (default ~/.cache/rmt-deploy-arm64):
#   apt/                  private apt config/lists/cache (arm64 bookworm + amd64 bookworm-backports)
#   debs/                 downloaded .debs (qemu + arm64 sysroot)
#   qemu/bin/qemu-aarch64 static qemu 10.x from bookworm-backports (package qemu-user)
#   sysroot/              arm64 bookworm libc + CPython 3.11 (+ precompiled .pyc)
#   wheels/SET/           aarch64 wheels per runtime set
#   site/SET/             `pip install --target` of each set (PYTHONPATH entries)
#   bin/python-arm64      launcher:  python-arm64 CPU [python args...]
#   bin/python3-arm64     inner launcher; this is sys.executable inside the guest,
#                         so subprocess.run([sys.executable, ...]) re-enters qemu.
#
# Environment knobs:
#   ARM64_SETS      runtime sets to build (default "base litert mnn openvino")
#   DEBIAN_MIRROR   e.g. http://deb.debian.org (default: taken from host apt sources)
#   PIP             host pip command (default "python3 -m pip")
#   CONSTRAINTS     pip constraints file (default: the checkout's constraints.txt), so the
#                   aarch64 runtimes are the versions the x86 side is tested with
#   BASE_REQS / LITERT_REQS / MNN_REQS / OPENVINO_REQS  pip requirement specs
#
# Idempotent: each step leaves a stamp recording its inputs and is skipped
# when the stamp matches. Delete CACHE_DIR (or a stamp in it) to rebuild.
set -euo pipefail

CACHE=${1:-${HOME}/.cache/rmt-deploy-arm64}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
SETS=${ARM64_SETS:-"base litert mnn openvino"}
PIP=${PIP:-"python3 -m pip"}
export PIP_ROOT_USER_ACTION=ignore
HOSTPY=${HOSTPY:-python3}

# Versions come from the constraints file: the same runtimes as on x86, so outputs compare.
CONSTRAINTS=${CONSTRAINTS:-$(cd "$(dirname "$0")/.." && pwd)/constraints.txt}
[[ -f $CONSTRAINTS ]] || die_early=1
BASE_REQS=${BASE_REQS:-"numpy pillow onnxruntime onnx typer rich"}
# onnx: rmt_deploy reads ONNX metadata with it (`rmt-deploy predict` fails without it)
LITERT_REQS=${LITERT_REQS:-"ai-edge-litert"}
MNN_REQS=${MNN_REQS:-"mnn"}
OPENVINO_REQS=${OPENVINO_REQS:-"openvino"}

# Root packages of the sysroot; their Depends/Pre-Depends are resolved from
# the arm64 package lists. Packages in PRUNE are not followed: they are only
# needed to *install* packages with dpkg (maintainer scripts), not to run python.
SYSROOT_ROOTS="python3.11-minimal libpython3.11-stdlib libstdc++6 libgomp1 zlib1g"
PRUNE="dpkg tar perl perl-base install-info mailcap mime-support debconf readline-common"

log()  { printf '[arm64-env] %s\n' "$*" >&2; }
die()  { log "ERROR: $*"; exit 1; }
TIMES=()
step() {  # step NAME STAMPKEY FUNC
  local name=$1 key=$2 fn=$3 stamp="$CACHE/.stamp-$1" t0 t1
  if [[ -f $stamp && "$(cat "$stamp")" == "$key" ]]; then
    log "$name: up to date"; TIMES+=("$name: cached"); return 0
  fi
  log "$name: building"
  rm -f "$stamp"
  t0=$(date +%s.%N)
  "$fn"
  t1=$(date +%s.%N)
  printf '%s' "$key" > "$stamp"
  TIMES+=("$name: $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f s", b-a}')")
}

[[ -z ${die_early:-} ]] || die "constraints file not found: $CONSTRAINTS (set CONSTRAINTS)"
[[ $(uname -m) == x86_64 ]] || die "host must be x86_64 (found $(uname -m))"
command -v apt-get >/dev/null && command -v dpkg >/dev/null || die "needs apt-get and dpkg (Debian host)"

# ---------------------------------------------------------------- mirror ---
detect_mirror() {
  [[ -n ${DEBIAN_MIRROR:-} ]] && { echo "${DEBIAN_MIRROR%/}"; return; }
  local u
  u=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/{for(i=2;i<=NF;i++)print $i}' |
      grep -E '/debian/?$' | head -n1 || true)
  [[ -z $u ]] && u=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk '$1=="deb"{for(i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; break}}' | grep -E '/debian/?$' | head -n1 || true)
  u=${u%/}; u=${u%/debian}
  echo "${u:-http://deb.debian.org}"
}
MIRROR=$(detect_mirror)
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -f $KEYRING ]] || die "missing $KEYRING (package debian-archive-keyring)"

A=$CACHE/apt
export APT_CONFIG=$A/etc/apt.conf
APT_GET=(apt-get -q -o APT::Sandbox::User=root)

setup_apt() {
  mkdir -p "$A"/etc/{apt.conf.d,preferences.d,sources.list.d} "$A"/state/lists/partial "$A"/cache/archives/partial
  : > "$A/status"
  cat > "$A/etc/sources.list" <<EOF
deb [arch=arm64 signed-by=$KEYRING] $MIRROR/debian bookworm main
deb [arch=arm64 signed-by=$KEYRING] $MIRROR/debian bookworm-updates main
deb [arch=arm64 signed-by=$KEYRING] $MIRROR/debian-security bookworm-security main
deb [arch=amd64 signed-by=$KEYRING] $MIRROR/debian bookworm-backports main
EOF
  cat > "$A/etc/apt.conf" <<EOF
Dir::Etc "$A/etc";
Dir::Etc::main "$A/etc/apt.conf";
Dir::Etc::Parts "$A/etc/apt.conf.d";
Dir::Etc::SourceList "$A/etc/sources.list";
Dir::Etc::SourceParts "$A/etc/sources.list.d";
Dir::Etc::Preferences "$A/etc/preferences";
Dir::Etc::PreferencesParts "$A/etc/preferences.d";
Dir::Etc::TrustedParts "/etc/apt/trusted.gpg.d";
Dir::State "$A/state";
Dir::State::status "$A/status";
Dir::Cache "$A/cache";
APT::Architecture "amd64";
APT::Architectures { "amd64"; "arm64"; };
Acquire::Languages "none";
Acquire::GzipIndexes "true";
Acquire::Check-Valid-Until "false";
Acquire::IndexTargets::deb::DEP-11 { DefaultEnabled "false"; };
Acquire::IndexTargets::deb::DEP-11-icons { DefaultEnabled "false"; };
Acquire::IndexTargets::deb::DEP-11-icons-small { DefaultEnabled "false"; };
Acquire::IndexTargets::deb::DEP-11-icons-hidpi { DefaultEnabled "false"; };
EOF
  "${APT_GET[@]}" update >&2
}

# ------------------------------------------------------------------ qemu ---
build_qemu() {
  local d=$CACHE/debs/qemu x=$CACHE/qemu/.x
  rm -rf "$d" "$CACHE/qemu"; mkdir -p "$d" "$x" "$CACHE/qemu/bin"
  # In qemu >= 8.2 Debian packages, `qemu-user` itself is static
  # (qemu-user-static is a transitional package of symlinks).
  (cd "$d" && "${APT_GET[@]}" download qemu-user:amd64/bookworm-backports >&2)
  dpkg -x "$d"/qemu-user_*.deb "$x"
  cp "$x/usr/bin/qemu-aarch64" "$CACHE/qemu/bin/qemu-aarch64"
  rm -rf "$x" "$d"   # the .deb is 63 MB / 370 MB unpacked; keep only qemu-aarch64 (14 MB)
  "$CACHE/qemu/bin/qemu-aarch64" --version | head -n1 > "$CACHE/qemu/VERSION"
}

# --------------------------------------------------------------- sysroot ---
resolve_debs() {  # prints the closure of SYSROOT_ROOTS, one package per line
  "$HOSTPY" - "$SYSROOT_ROOTS" "$PRUNE" <<'PY'
import subprocess, sys
roots = sys.argv[1].split(); prune = set(sys.argv[2].split())
def name(p): return p.split(':')[0]
seen, todo = set(), [r + ':arm64' for r in roots]
while todo:
    batch = [p for p in todo if p not in seen]; todo = []
    if not batch: break
    seen.update(batch)
    out = subprocess.run(['apt-cache', 'depends', '--no-recommends', '--no-suggests',
                          '--no-conflicts', '--no-breaks', '--no-replaces', '--no-enhances'] + batch,
                         check=True, capture_output=True, text=True).stdout.splitlines()
    i, in_alt = 0, False
    while i < len(out):
        line = out[i]; s = line.strip()
        if line.startswith(('  ', ' |')) and not line.startswith('    ') and ':' in s:
            alt_cont = in_alt          # previous line started an or-group: this one is an alternative
            in_alt = line.startswith(' |')
            kind, dep = s.lstrip('|').split(':', 1)[0], s.split(': ', 1)[1]
            if kind in ('Depends', 'PreDepends') and not alt_cont:
                if dep.startswith('<'):  # virtual: take first provider
                    prov = out[i + 1].strip() if i + 1 < len(out) and out[i + 1].startswith('    ') else None
                    dep = prov
                if dep and name(dep) not in prune:
                    todo.append(dep)  # arch:all packages come without ':arm64'; keep them so
        i += 1
for p in sorted(seen): print(p)
PY
}

build_sysroot() {
  local d=$CACHE/debs/arm64 s=$CACHE/sysroot
  rm -rf "$d" "$s"; mkdir -p "$d" "$s"
  resolve_debs > "$CACHE/sysroot-packages.txt"
  log "sysroot packages: $(tr '\n' ' ' < "$CACHE/sysroot-packages.txt")"
  (cd "$d" && "${APT_GET[@]}" download $(cat "$CACHE/sysroot-packages.txt") >&2)
  for f in "$d"/*.deb; do dpkg -x "$f" "$s"; done
  # `python3` name for convenience
  ln -sf python3.11 "$s/usr/bin/python3"
  # Precompile the stdlib with the host's CPython 3.11 (same .pyc magic for all
  # 3.11.x): halves emulated start-up time. Some test/py2 files fail: ignored.
  "$HOSTPY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' ||
    { log "host $HOSTPY is not 3.11: skipping .pyc precompilation"; return 0; }
  "$HOSTPY" -m compileall -q -j0 "$s/usr/lib/python3.11" >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------- wheels ---
PIP_PLAT=(-c "$CONSTRAINTS" --only-binary=:all: --python-version 3.11 --implementation cp
          --abi cp311 --abi abi3 --abi none --platform manylinux2014_aarch64)
for v in 17 24 26 27 28 31 34 35 36; do PIP_PLAT+=(--platform "manylinux_2_${v}_aarch64"); done  # bookworm glibc = 2.36

reqs_of() { case $1 in base) echo "$BASE_REQS";; litert) echo "$LITERT_REQS";;
  mnn) echo "$MNN_REQS";; openvino) echo "$OPENVINO_REQS";; *) die "unknown set $1";; esac; }

build_set() {  # uses $SET
  local w=$CACHE/wheels/$SET t=$CACHE/site/$SET base_numpy
  rm -rf "$w" "$t"; mkdir -p "$w"
  if [[ $SET == base ]]; then
    $PIP download -q --disable-pip-version-check -d "$w" "${PIP_PLAT[@]}" $(reqs_of base) 2> >(grep -v 'is ignored' >&2)
  else
    # resolve together with the base pins so shared deps (numpy, protobuf...) agree
    $PIP download -q --disable-pip-version-check -d "$w" "${PIP_PLAT[@]}" $(reqs_of base) $(reqs_of "$SET") \
      2> >(grep -v 'is ignored' >&2)
    for f in "$CACHE/wheels/base"/*.whl; do rm -f "$w/$(basename "$f")"; done
  fi
  shopt -s nullglob; local whls=("$w"/*.whl); shopt -u nullglob
  [[ ${#whls[@]} -gt 0 ]] || die "no wheels for set $SET"
  $PIP install -q --disable-pip-version-check --no-deps --no-index --no-compile --target "$t" "${PIP_PLAT[@]}" "${whls[@]}"
  rm -rf "$t/bin"   # console scripts have host shebangs; useless here
  if "$HOSTPY" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
    "$HOSTPY" -m compileall -q -j0 "$t" >/dev/null 2>&1 || true
  fi
}

# -------------------------------------------------------------- launcher ---
write_launchers() {
  local b=$CACHE/bin cpu
  rm -rf "$b"; mkdir -p "$b"
  cat > "$b/python3-arm64" <<'EOF'
#!/bin/sh
# Emulated aarch64 CPython 3.11 under qemu-aarch64 user mode.
# bin/python3-arm64-<CPU> are symlinks to this file; the name selects the CPU
# model and becomes the guest's sys.executable (via qemu -0). A guest execve()
# of it runs natively on the host (/bin/sh is x86_64) and re-enters qemu with
# the same CPU, so subprocess / multiprocessing(spawn) children work, even with
# a cleared environment.
#   ARM64_CPU         CPU model when called as plain python3-arm64 (default: max)
#   ARM64_SETS        runtime sets on PYTHONPATH (default: all built sets)
#   ARM64_PYTHONPATH  extra entries put before the sets
#   ARM64_QEMU_ARGS   extra qemu options (e.g. "-d plugin", "-one-insn-per-tb")
name=$(basename "$0")
bindir=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$bindir")
case $name in
  python3-arm64-*) cpu=${name#python3-arm64-} ;;
  *) cpu=${ARM64_CPU:-max}
     [ -e "$bindir/python3-arm64-$cpu" ] || { echo "python3-arm64: unknown CPU model '$cpu' (see: $root/qemu/bin/qemu-aarch64 -cpu help)" >&2; exit 2; } ;;
esac
if [ -z "${ARM64_SITE_PATH:-}" ]; then
  sets=${ARM64_SETS:-$(cat "$root/site/SETS" 2>/dev/null)}
  p=""
  for s in $sets; do
    [ -d "$root/site/$s" ] || { echo "python3-arm64: set '$s' not built in $root/site" >&2; exit 2; }
    p="$p${p:+:}$root/site/$s"
  done
  ARM64_SITE_PATH=$p; export ARM64_SITE_PATH
  PYTHONPATH="${ARM64_PYTHONPATH:+$ARM64_PYTHONPATH:}$p${PYTHONPATH:+:$PYTHONPATH}"; export PYTHONPATH
fi
# shellcheck disable=SC2086
exec "$root/qemu/bin/qemu-aarch64" -L "$root/sysroot" -cpu "$cpu" ${ARM64_QEMU_ARGS:-} \
     -0 "$bindir/python3-arm64-$cpu" "$root/sysroot/usr/bin/python3.11" "$@"
EOF
  cat > "$b/python-arm64" <<'EOF'
#!/bin/sh
# Usage: python-arm64 CPU [python args...]
#   CPU: a qemu-aarch64 model, e.g. cortex-a53 cortex-a72 cortex-a76 cortex-a710
#        neoverse-n1 neoverse-n2 neoverse-v1 max   (list: ls $(dirname $0)/python3-arm64-*)
[ $# -ge 1 ] || { echo "usage: $0 CPU [python args...]" >&2; exit 2; }
cpu=$1; shift
bindir=$(cd "$(dirname "$0")" && pwd)
[ -e "$bindir/python3-arm64-$cpu" ] || { echo "python-arm64: unknown CPU model '$cpu'" >&2; exit 2; }
exec "$bindir/python3-arm64-$cpu" "$@"
EOF
  chmod +x "$b/python3-arm64" "$b/python-arm64"
  for cpu in $("$CACHE/qemu/bin/qemu-aarch64" -cpu help | awk 'NR>1{print $1}'); do
    ln -s python3-arm64 "$b/python3-arm64-$cpu"
  done
  echo "$ALLSETS" > "$CACHE/site/SETS"
}

# ------------------------------------------------------------------ main ---
ALLSETS=$(echo base $SETS | tr ' ' '\n' | awk 'NF && !s[$0]++' | tr '\n' ' '); ALLSETS=${ALLSETS% }
step apt      "$MIRROR|$A"                                setup_apt
step qemu     "qemu-user bookworm-backports"              build_qemu
step sysroot  "$SYSROOT_ROOTS|$PRUNE"                     build_sysroot
for SET in $ALLSETS; do
  step "site-$SET" "$(reqs_of base)|$(reqs_of "$SET")|$(sha256sum < "$CONSTRAINTS")"    build_set
done
step launcher "v2|$ALLSETS"                               write_launchers

rm -f "$A"/cache/*.bin   # apt's binary caches (~75 MB); apt rebuilds them when next needed

# smoke test (fast: no numpy import)
"$CACHE/bin/python-arm64" cortex-a53 -c 'import platform, sys; assert platform.machine() == "aarch64", platform.machine(); print("guest ok:", sys.version.split()[0], platform.machine())' >&2

echo "== qemu:    $(cat "$CACHE/qemu/VERSION")"
echo "== sysroot packages: $(tr '\n' ' ' < "$CACHE/sysroot-packages.txt")"
echo "== step times:"; printf '   %s\n' "${TIMES[@]}"
echo "== sizes:"
du -sh "$CACHE/qemu" "$CACHE/sysroot" "$CACHE/site"/* "$CACHE/wheels" "$CACHE/apt" 2>/dev/null | sed 's/^/   /'
du -sh "$CACHE" | sed 's/^/   total /'
echo "== run:  $CACHE/bin/python-arm64 cortex-a76 -c 'import onnxruntime; print(onnxruntime.__version__)'"
