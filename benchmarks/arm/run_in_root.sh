#!/bin/bash
# run_in_root.sh ROOT CMD...  -- run CMD inside the arm64 root under qemu-user.
#
# Mounts proc, /dev (bind) and a tmpfs on /tmp inside ROOT, never /sys (ONNX Runtime
# segfaults under qemu-user when /sys is mounted: its cpuinfo reads the host's x86 topology).
# Everything happens in a private mount namespace (unshare -m), so the mounts are invisible
# to the host and vanish with the process even if it is killed; a trap also unmounts them.
# Several runs may share one ROOT at the same time.
#
# Environment:
#   QEMU_CPU      emulated CPU (default cortex-a76: dotprod; cortex-a72: no dotprod;
#                 max: i8mm, sve2).  Passed to qemu-aarch64 through binfmt_misc.
#   ROOT_ENV      extra "NAME=value" words for the command's environment (space separated).
#   ROOT_BIND     extra "HOSTDIR:ROOTDIR" bind mounts (space separated), e.g. a work dir.
#   ROOT_CWD      working directory inside the root (default /root).
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 ROOT CMD..." >&2
    exit 2
fi
ROOT=$(readlink -f "$1")
shift
[ -x "$ROOT/usr/bin/env" ] || { echo "run_in_root: $ROOT is not a built root" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run_in_root: needs root (chroot, mount)" >&2; exit 2; }
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    echo "run_in_root: binfmt qemu-aarch64 not registered; run build_root.sh first" >&2
    exit 2
fi

# Re-exec ourselves in a private mount namespace.
if [ -z "${_RUN_IN_ROOT_NS:-}" ]; then
    exec env _RUN_IN_ROOT_NS=1 unshare --mount --propagation private "$(readlink -f "$0")" "$ROOT" "$@"
fi

MOUNTED=()
cleanup() {
    local i
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
        umount -l "${MOUNTED[$i]}" 2>/dev/null || true
    done
}
trap cleanup EXIT

domount() { # domount TARGET mount-args...
    local target=$1
    shift
    mkdir -p "$target"
    mount "$@" "$target"
    MOUNTED+=("$target")
}

domount "$ROOT/proc" -t proc proc
domount "$ROOT/dev" --rbind /dev  # with /dev/pts, /dev/shm (POSIX semaphores)
domount "$ROOT/tmp" -t tmpfs -o mode=1777,size=4g tmpfs
for b in ${ROOT_BIND:-}; do
    domount "$ROOT/${b#*:}" --bind "${b%%:*}"
done
# /sys is deliberately NOT mounted.
if mountpoint -q "$ROOT/sys" 2>/dev/null; then
    echo "run_in_root: $ROOT/sys is mounted; ONNX Runtime crashes under qemu with it" >&2
    exit 2
fi

export QEMU_CPU=${QEMU_CPU:-cortex-a76}
# The command runs as a child (not exec'd) so that the trap can unmount after it; TERM, INT and
# HUP sent to this script are passed on to it (bash would otherwise wait for the child before
# running a trap).  `<&0` keeps stdin: a background job would get /dev/null.
# shellcheck disable=SC2086
chroot "$ROOT" /usr/bin/env -i \
    QEMU_CPU="$QEMU_CPU" \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" \
    ${ROOT_ENV:-} \
    /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "${ROOT_CWD:-/root}" "$@" <&0 &
child=$!
forward() { kill -"$1" "$child" 2>/dev/null || true; }
trap 'forward TERM' TERM
trap 'forward INT' INT
trap 'forward HUP' HUP
rc=0
while :; do
    wait "$child" && rc=0 || rc=$?
    kill -0 "$child" 2>/dev/null || break # wait was interrupted by a forwarded signal
done
exit "$rc"
