#!/bin/bash
# Proves the README's first command on a fresh Debian 12 machine: a `minbase` bookworm root
# filesystem (debootstrap), the checkout's HEAD copied in (`git archive`), and `scripts/setup.sh`
# run in it by chroot with an empty environment (a root login's HOME/USER/SHELL, PATH from
# /etc/profile). Passes only if the main job prints the guest's `uname -a` line (`Linux ...
# x86_64 GNU/Linux`, with the release of the kernel the default guest was built from).
#
#   scripts/test-fresh.sh [--refresh]      as root; --refresh rebuilds the cached root filesystem
#
# Nothing of the host is visible inside but what a fresh machine has too: /dev (bind-mounted, the
# same devices), a fresh /proc and /sys, the host's resolv.conf and apt sources (the same Debian
# mirror: nothing else is reachable from CI). Three package caches are bind-mounted so nothing is
# downloaded twice: debootstrap's and apt's /var/cache/apt/archives, and ~/.cache/vmctl/debs (the
# default guest's kernel and busybox .debs, checked against the archive's sha256 anyway).
# The debootstrapped tree is cached as ~/.cache/vmctl/test-fresh/bookworm-minbase-amd64.tar.
#
# Everything runs in a private mount and PID namespace (unshare): the mounts and every process
# started inside (QEMU included) go away with it on any exit, ^C and SIGKILL of this script
# included; the trap then checks that no process is left in the tree and removes the tree.
# Output: the uname line and "test-fresh: PASS ...", or the end of setup.sh's stderr and
# "test-fresh: FAIL ..."; exit status 0 or 1. The whole run is logged in $VMCTL_FRESH_LOG (default
# /tmp/vmctl-test-fresh.log).
set -euo pipefail
export LC_ALL=C
src=$(cd "$(dirname "$0")/.." && pwd)
suite=bookworm
variant=minbase
arch=amd64
cache=${XDG_CACHE_HOME:-$HOME/.cache}/vmctl
tarball=$cache/test-fresh/$suite-$variant-$arch.tar
log=${VMCTL_FRESH_LOG:-/tmp/vmctl-test-fresh.log}
refresh=0

# --- inside the namespaces: mount, chroot, run (re-executed by the outer part below) ---
if [ "${1:-}" = --inner ]; then
  root=$2
  umount_all() { # innermost first; the namespace would drop them anyway
    local m
    for m in $(awk -v r="$root" '$5 == r || index($5, r "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
      umount -l "$m" 2>/dev/null || true
    done
  }
  trap umount_all EXIT
  mount --make-rprivate /
  mount -t proc proc "$root/proc"
  mount -t sysfs sysfs "$root/sys"
  # a booted Debian 12 has its cgroup hierarchy mounted (systemd: cgroup2; here, v1 controllers):
  # the jail puts each VM's QEMU in a cgroup of its own
  mount --rbind /sys/fs/cgroup "$root/sys/fs/cgroup"
  mount --make-rslave "$root/sys/fs/cgroup"
  mount --rbind /dev "$root/dev"
  mount --make-rslave "$root/dev"
  mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
  mkdir -p "$root/root/.cache/vmctl/debs" "$cache/debs"
  mount --bind /var/cache/apt/archives "$root/var/cache/apt/archives"
  mount --bind "$cache/debs" "$root/root/.cache/vmctl/debs"
  # a root login's environment, nothing of ours: bash -l sets PATH from /etc/profile
  env -i HOME=/root USER=root LOGNAME=root SHELL=/bin/bash TERM=dumb "$(command -v chroot)" \
    "$root" /bin/bash -l -c 'cd /root/vm-manager && scripts/setup.sh'
  exit $?
fi

[ "${1:-}" = --refresh ] && refresh=1
[ "$(id -u)" -eq 0 ] || { echo "test-fresh: needs root (debootstrap, chroot, mounts)" >&2; exit 1; }
for t in debootstrap unshare chroot git tar; do
  command -v $t >/dev/null || { echo "test-fresh: FAIL: '$t' not found (scripts/install-deps.sh installs it)"; exit 1; }
done
git -C "$src" rev-parse --verify -q HEAD >/dev/null || { echo "test-fresh: FAIL: $src is not a git checkout"; exit 1; }

# The host's Debian mirror: the URI of the source that carries $suite (deb822 or one-line format).
host_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v s="$suite" 'BEGIN { RS = ""; FS = "\n" }
      { u = ""; ok = 0; deb = 0
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { u = $i; sub(/^URIs:[ \t]*/, "", u); sub(/[ \t].*/, "", u) }
          if ($i ~ /^Suites:/ && (" " $i " ") ~ (" " s " ")) ok = 1
          if ($i ~ /^Types:/ && $i ~ /[ \t]deb([ \t]|$)/) deb = 1
        }
        if (ok && deb && u != "") { print u; exit } }' "$f"
  done
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    sed 's/\[[^]]*\]//' | awk -v s="$suite" '$1 == "deb" && $3 == s { print $2 }'
  return 0
}
mirror=$(host_mirror | head -1 || true)
[ -n "$mirror" ] || { echo "test-fresh: FAIL: no '$suite' source in /etc/apt/sources.list*"; exit 1; }

work=$(mktemp -d /var/tmp/vmctl-fresh.XXXXXX)
root=$work/root
inner_pid=
cleanup() {
  local rc=$? pids p left=""
  trap - EXIT INT TERM HUP
  if [ -n "$inner_pid" ] && kill -0 "$inner_pid" 2>/dev/null; then
    # unshare ignores SIGINT/SIGTERM while it waits; its child, the PID namespace's init, dies with
    # it (--kill-child) and takes every process of the namespace along, QEMU included
    kill -KILL "$inner_pid" 2>/dev/null || true
    wait "$inner_pid" 2>/dev/null || true
  fi
  # no process may be left with its root in the tree (the kernel reaps the namespace's processes
  # asynchronously: give it a few seconds)
  for _ in $(seq 50); do
    left=""
    for p in /proc/[0-9]*; do
      [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && left="$left ${p#/proc/}"
    done
    [ -z "$left" ] && break
    sleep 0.1
  done
  if [ -n "$left" ]; then
    echo "test-fresh: FAIL: processes left in the chroot:$left (killed)"
    for p in $left; do kill -KILL "$p" 2>/dev/null || true; done
    rc=1
  fi
  if grep -qF " $root" /proc/self/mountinfo; then
    echo "test-fresh: FAIL: mounts left under $root (not removing it)"; rc=1
  else
    rm -rf --one-file-system "$work"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'echo "test-fresh: FAIL: interrupted" >&2; exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

t0=$(date +%s)
: >"$log"
say() { echo "test-fresh: $*" | tee -a "$log" >&2; }

# --- the root filesystem: cached tarball, else debootstrap ---
if [ $refresh -eq 1 ] || [ ! -s "$tarball" ]; then
  say "debootstrap --variant=$variant $suite from $mirror"
  mkdir -p "$root" "$(dirname "$tarball")"
  if ! debootstrap --variant=$variant --arch=$arch --cache-dir=/var/cache/apt/archives \
      "$suite" "$root" "$mirror" >>"$log" 2>&1; then
    tail -20 "$log"
    say "FAIL: debootstrap failed (log: $log)"
    exit 1
  fi
  rm -f "$root"/var/cache/apt/archives/*.deb
  tar -C "$root" --numeric-owner -cf "$tarball.tmp.$$" . && mv "$tarball.tmp.$$" "$tarball"
  t_boot=$(($(date +%s) - t0))
  say "root filesystem cached as $tarball (${t_boot} s)"
else
  mkdir -p "$root"
  tar -C "$root" --numeric-owner -xf "$tarball"
  say "root filesystem from $tarball"
fi

# --- what a fresh machine has: network configuration and the Debian sources, nothing else ---
cp /etc/resolv.conf "$root/etc/resolv.conf"
rm -f "$root/etc/apt/sources.list"
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  case $f in */sources.list) cp "$f" "$root/etc/apt/sources.list" ;; *) cp "$f" "$root/etc/apt/sources.list.d/" ;; esac
done
# the keyrings the sources name must exist in the tree (debian-archive-keyring does for Debian's)
missing_keys=$(grep -ho 'Signed-By: *[^ ]*\|signed-by=[^] ]*' "$root"/etc/apt/sources.list.d/* "$root"/etc/apt/sources.list 2>/dev/null |
  sed 's/.*[:=] *//' | sort -u | while read -r k; do [ -e "$root$k" ] || echo "$k"; done || true)
[ -z "$missing_keys" ] || { say "FAIL: the host's apt sources name keyrings a fresh machine lacks: $missing_keys"; exit 1; }
mkdir -p "$root/root/vm-manager"
git -C "$src" archive HEAD | tar -x -C "$root/root/vm-manager"
say "checkout $(git -C "$src" rev-parse --short HEAD) copied in; running scripts/setup.sh"

# --- the README's first command, in its own mount and PID namespace ---
t1=$(date +%s)
set +e
unshare --mount --pid --fork --kill-child bash "$0" --inner "$root" </dev/null >"$work/out" 2>"$work/err" &
inner_pid=$!
wait "$inner_pid"
rc=$?
inner_pid=
set -e
t_setup=$(($(date +%s) - t1))
{ echo "--- setup.sh: stderr"; cat "$work/err"; echo "--- setup.sh: stdout"; cat "$work/out"; } >>"$log"
total=$(($(date +%s) - t0))
# the main job's output, its last line: the guest's `uname -a`, naming the kernel the default
# guest was built with (not the host's)
line=$(tail -1 "$work/out")
manifest=$root/root/.local/share/vmctl/images/default/manifest
release=$(sed -n 's/^kernel_package=linux-image-//p' "$manifest" 2>/dev/null || true)
if [ $rc -eq 0 ] && [ -n "$release" ] && [[ $line == "Linux "*" $release "*" x86_64 GNU/Linux" ]]; then
  echo "$line"
  say "PASS: setup.sh on a fresh $suite printed the guest's uname -a (setup ${t_setup} s, total ${total} s)"
  exit 0
fi
echo "--- the end of setup.sh's stderr:" >&2
tail -25 "$work/err" >&2
say "FAIL: setup.sh exited $rc; its last line was '$line', not the guest's uname -a (log: $log)"
exit 1
