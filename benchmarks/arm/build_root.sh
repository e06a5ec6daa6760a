#!/bin/bash
# build_root.sh [ROOT]  -- build an arm64 Debian bookworm root for qemu-user emulation, with a
# venv at ROOT/opt/venv holding onnxruntime, numpy, onnx, pyyaml and this checkout's `search`
# package (enough for `python -m search agent`; no torch).  Idempotent: each step is skipped
# when its result is already there.  Needs root (mmdebstrap, binfmt_misc, chroot) and Debian's
# qemu-user-static, binfmt-support and mmdebstrap (installed when missing).
# Default ROOT: .runtimes/arm64-root in this checkout (git-ignored).
#
# Environment (all optional):
#   WHEELS        wheel directory on the host (default .runtimes/arm64-wheels)
#   PROJECT       project checkout whose `search` package is copied in (default this one)
#   ORT_VERSION, NUMPY_VERSION, ONNX_VERSION, PYYAML_VERSION
#                 pins for the arm64 wheels (default: what the host's project venv has, so
#                 host and emulated results compare like for like)
#   HOST_PY       host python used for `pip download` (default $PROJECT/.venv/bin/python)
#   MIRROR        Debian mirror (default http://deb.debian.org/debian)
#   EXTRA_PKGS    more Debian packages for the root (space separated)
#   VARIANT       mmdebstrap variant (default apt = Essential:yes set + apt, so packages can
#                 be added to the root later; "essential" is a little smaller, without apt)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ROOT=$(readlink -m "${1:-$REPO/.runtimes/arm64-root}")
WHEELS=$(readlink -m "${WHEELS:-$REPO/.runtimes/arm64-wheels}")
PROJECT=${PROJECT:-$REPO}
LOG_DIR=$(dirname "$ROOT")
mkdir -p "$LOG_DIR"
HOST_PY=${HOST_PY:-$PROJECT/.venv/bin/python}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
VARIANT=${VARIANT:-apt}
# python3-venv: python3 + ensurepip's bundled pip/setuptools wheels; libstdc++6: every manylinux
# C++ extension (numpy, onnx, onnxruntime) links it, and the essential set lacks it.
# EXTRA_PKGS (space separated) adds Debian packages; an existing root gets them through apt.
# shellcheck disable=SC2206
ROOT_PKGS=(python3-venv libstdc++6 ${EXTRA_PKGS:-})
RUN="$HERE/run_in_root.sh"
export QEMU_CPU=${QEMU_CPU:-cortex-a76}

T0=$(date +%s)
step_t=$T0
log() { # one line per step: total elapsed, step elapsed, message
    local now
    now=$(date +%s)
    printf '[%5ds +%4ds] %s\n' $((now - T0)) $((now - step_t)) "$*"
    step_t=$now
}
[ "$(id -u)" = 0 ] || { echo "build_root.sh must run as root" >&2; exit 2; }

# ---------------------------------------------------------------- 1. host tools
need=()
for p in qemu-user-static binfmt-support mmdebstrap; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    log "host packages installed: ${need[*]}"
else
    log "host packages present (qemu-user-static binfmt-support mmdebstrap): skip"
fi

# ---------------------------------------------------------------- 2. binfmt_misc
if ! mountpoint -q /proc/sys/fs/binfmt_misc; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if ! grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null; then
    update-binfmts --enable qemu-aarch64
    log "binfmt qemu-aarch64 enabled"
else
    log "binfmt qemu-aarch64 already enabled: skip"
fi
# The F (fix-binary) flag makes the kernel keep the host's qemu open, so the root needs no
# copy of qemu-aarch64-static.
grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 ||
    echo "warning: qemu-aarch64 binfmt lacks the F flag; copy qemu-aarch64-static into the root" >&2

# ---------------------------------------------------------------- 3. the root
# Built into ROOT.partial and renamed when complete, so an interrupted build is redone.
# variant apt + ROOT_PKGS (no python3-pip: the venv's pip comes from ensurepip's bundled
# wheel; no ca-certificates: nothing in the root talks TLS). Merged-/usr is set up by
# mmdebstrap's hook (symlinks + usr-is-merged) instead of installing usrmerge, which pulls in
# full perl and runs convert-usrmerge under qemu; docs, man pages and translations are not
# unpacked; dpkg runs under eatmydata (no fsync). All of these cut emulated dpkg time.
if [ -x "$ROOT/usr/bin/python3" ] && [ -e "$ROOT/.build_root.debootstrap-done" ]; then
    log "root $ROOT exists: skip mmdebstrap"
else
    rm -rf "$ROOT.partial"
    mmdebstrap --arch=arm64 --variant="$VARIANT" \
        --include="$(IFS=,; echo "${ROOT_PKGS[*]}")" \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        --hook-dir=/usr/share/mmdebstrap/hooks/eatmydata \
        --aptopt='APT::Install-Recommends "false"' \
        --aptopt='Acquire::Languages "none"' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/lintian/*' \
        "$SUITE" "$ROOT.partial" \
        "deb $MIRROR $SUITE main" \
        "deb $MIRROR $SUITE-updates main" \
        "deb ${MIRROR%/debian}/debian-security $SUITE-security main" \
        >"$LOG_DIR/mmdebstrap.log" 2>&1 || {
        echo "mmdebstrap failed; see $LOG_DIR/mmdebstrap.log" >&2
        tail -20 "$LOG_DIR/mmdebstrap.log" >&2
        exit 1
    }
    [ -e "$ROOT" ] && rm -rf "$ROOT"
    mv "$ROOT.partial" "$ROOT"
    touch "$ROOT/.build_root.debootstrap-done"
    log "mmdebstrap arm64 $SUITE -> $ROOT ($(du -sh --apparent-size "$ROOT" | cut -f1))"
fi
# A root built by an older version of this script may lack some of ROOT_PKGS: apt inside the
# root (plain http to the Debian mirror works under qemu; only TLS does not).
missing=()
for p in "${ROOT_PKGS[@]}"; do
    "$RUN" "$ROOT" dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
        missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ -x "$ROOT/usr/bin/apt-get" ] || {
        echo "root lacks ${missing[*]} and has no apt (variant essential): rm -rf $ROOT and rerun" >&2
        exit 1
    }
    cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
    "$RUN" "$ROOT" sh -c "apt-get -qq update && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends ${missing[*]} >/dev/null && apt-get clean && rm -rf /var/lib/apt/lists/*"
    rm -f "$ROOT/etc/resolv.conf"
    log "apt-get install in root: ${missing[*]}"
else
    log "root packages present (${ROOT_PKGS[*]}): skip"
fi
PYVER=$("$RUN" "$ROOT" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PYFULL=$("$RUN" "$ROOT" python3 -V)
log "root python: $PYFULL ($("$RUN" "$ROOT" uname -m))"

# ---------------------------------------------------------------- 4. wheels (host side)
# pip inside the root fails on TLS under qemu, so the host downloads aarch64 wheels.
hostver() { "$HOST_PY" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null; }
ORT_VERSION=${ORT_VERSION:-$(hostver onnxruntime)}
NUMPY_VERSION=${NUMPY_VERSION:-$(hostver numpy)}
ONNX_VERSION=${ONNX_VERSION:-$(hostver onnx)}
PYYAML_VERSION=${PYYAML_VERSION:-$(hostver pyyaml)}
pin() { [ -n "$2" ] && echo "$1==$2" || echo "$1"; }
REQS=("$(pin onnxruntime "$ORT_VERSION")" "$(pin numpy "$NUMPY_VERSION")"
    "$(pin onnx "$ONNX_VERSION")" "$(pin pyyaml "$PYYAML_VERSION")")
mkdir -p "$WHEELS"
printf '%s\n' "${REQS[@]}" >"$WHEELS/.requirements.new"
if cmp -s "$WHEELS/.requirements.new" "$WHEELS/requirements.txt" && [ -e "$WHEELS/.done" ]; then
    rm "$WHEELS/.requirements.new"
    log "wheels for ${REQS[*]} present: skip download"
else
    mv "$WHEELS/.requirements.new" "$WHEELS/requirements.txt"
    rm -f "$WHEELS/.done"
    # The host's pip configuration (find-links, extra indexes, constraints) is left out, so
    # the wheels come from PyPI alone.
    env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
        "$HOST_PY" -m pip download -q --disable-pip-version-check \
        --only-binary=:all: --python-version "$PYVER" --implementation cp --abi "cp${PYVER/./}" --abi abi3 --abi none \
        --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 \
        --platform manylinux_2_26_aarch64 --platform manylinux_2_17_aarch64 \
        --platform manylinux2014_aarch64 --platform linux_aarch64 \
        -r "$WHEELS/requirements.txt" -d "$WHEELS"
    (cd "$WHEELS" && sha256sum ./*.whl >SHA256SUMS)
    touch "$WHEELS/.done"
    log "downloaded $(ls "$WHEELS"/*.whl | wc -l) wheels for ${REQS[*]} -> $WHEELS"
fi

# ---------------------------------------------------------------- 5. venv
if [ -x "$ROOT/opt/venv/bin/python" ] && [ -x "$ROOT/opt/venv/bin/pip" ]; then
    log "venv $ROOT/opt/venv exists: skip"
else
    rm -rf "$ROOT/opt/venv"
    "$RUN" "$ROOT" python3 -m venv /opt/venv
    log "python3 -m venv /opt/venv ($("$RUN" "$ROOT" /opt/venv/bin/pip --version | cut -d' ' -f1-2))"
fi

# ---------------------------------------------------------------- 6. install wheels
# The wheels are bind-mounted at /wheels (read-only) rather than copied.
want=$(sort "$WHEELS/requirements.txt" | tr '\n' ' ')
if [ "$(cat "$ROOT/opt/venv/.build_root.installed" 2>/dev/null)" = "$want" ]; then
    log "wheels installed in venv: skip"
else
    mkdir -p "$ROOT/wheels"
    ROOT_BIND="$WHEELS:/wheels" "$RUN" "$ROOT" /opt/venv/bin/pip install -q \
        --disable-pip-version-check --no-index --find-links /wheels \
        -r /wheels/requirements.txt
    echo "$want" >"$ROOT/opt/venv/.build_root.installed"
    log "pip install --no-index: $want"
fi

# ---------------------------------------------------------------- 7. project package
# Copied (not installed: its pyproject pulls torch etc.) to /opt/project, on sys.path via .pth.
SITE="$ROOT/opt/venv/lib/python$PYVER/site-packages"
src_rev=$(git -C "$PROJECT" rev-parse HEAD 2>/dev/null || echo unknown)
src_sum=$(cd "$PROJECT" && find search -name '*.py' -type f -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-16)
if [ "$(cat "$ROOT/opt/project/.build_root.src" 2>/dev/null)" = "$src_sum" ]; then
    log "project package up to date ($src_rev): skip"
else
    rm -rf "$ROOT/opt/project"
    mkdir -p "$ROOT/opt/project"
    (cd "$PROJECT" && tar --exclude='__pycache__' --exclude='*.pyc' -cf - search pyproject.toml) |
        tar -C "$ROOT/opt/project" -xf -
    echo /opt/project >"$SITE/project.pth"
    echo "$src_rev" >"$ROOT/opt/project/.build_root.rev"
    echo "$src_sum" >"$ROOT/opt/project/.build_root.src"
    log "copied $PROJECT/search ($src_rev) -> $ROOT/opt/project"
fi

# ---------------------------------------------------------------- 8. smoke test
out=$("$RUN" "$ROOT" /opt/venv/bin/python -c '
import platform, sys, numpy, onnx, onnxruntime as ort
print(platform.machine(), sys.version.split()[0], "ort", ort.__version__, "numpy", numpy.__version__,
      "onnx", onnx.__version__, ort.get_available_providers())')
log "smoke: $out"
log "done: $ROOT ($(du -sh "$ROOT" | cut -f1))"
