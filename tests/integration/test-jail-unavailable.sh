#!/usr/bin/env bash
# Where vmctl runs as root but cannot jail (docs/isolation.md, "Where the jail cannot be made"): a
# chroot into a plain directory (the kernel refuses MS_PRIVATE on a "/" that is not a mount) and a
# root without CAP_SYS_ADMIN (a container's default). The VM runs unjailed, the start says so in a
# notice, `status --json` shows jailed false, doctor warns with the reason, and the VM works.
# Checked with a chroot made in a private mount namespace (a tmpfs holding a plain directory with
# the host's /usr, /etc, /dev, /proc, /sys, the store and the images bound in) and with setpriv
# dropping CAP_SYS_ADMIN from the bounding set.
TEST_NAME=jail-unavailable
. "$(dirname "$0")/lib.sh"
fails=0
need_guest
[ "$(id -u)" -eq 0 ] || skip "needs root (the jail is for root only)"
command -v setpriv >/dev/null || skip "setpriv is not installed (Debian package util-linux)"
command -v unshare >/dev/null || skip "unshare is not installed (Debian package util-linux)"
setup_home

# --- without CAP_SYS_ADMIN ---
out=$(setpriv --bounding-set -sys_admin "$VMCTL" create nocap --start --wait 2>&1)
grep -q "runs without the jail: vmctl lacks CAP_SYS_ADMIN" <<<"$out" &&
  ok "without CAP_SYS_ADMIN: the start says the VM runs unjailed" || fail "no notice: $out"
expect_eq "... status --json: not jailed" "$(vm status --json nocap | jq -r .jail.jailed)" false
expect_eq "... and the VM works" "$(vm exec nocap -- echo ok)" ok
expect_eq "... doctor warns" "$(setpriv --bounding-set -sys_admin "$VMCTL" --json doctor 2>/dev/null |
  jq -r '.[] | select(.name == "jail") | .status')" warn
vm destroy --force nocap >/dev/null

# --- in a chroot whose / is a plain directory ---
ROOTS=$(mktemp -d /tmp/vmctl-jail-chroot.XXXXXX)
cat >"$ROOTS/inner.sh" <<'EOF'
set -e
t=$1 home=$2 images=$3 vmctl=$4
mount --make-rprivate /
mount -t tmpfs tmpfs "$t"
r=$t/root # a plain directory on the tmpfs: not a mount's root
mkdir -p "$r"
for d in usr etc dev proc sys tmp run; do mkdir -p "$r/$d"; done
for l in bin sbin lib lib32 lib64 libx32; do [ -L "/$l" ] && ln -s "$(readlink "/$l")" "$r/$l"; done
mount --rbind /usr "$r/usr"; mount --rbind /etc "$r/etc"; mount --rbind /dev "$r/dev"
mount -t proc proc "$r/proc"; mount --rbind /sys "$r/sys"; mount -t tmpfs tmpfs "$r/tmp"
mkdir -p "$r$home" "$r$images" "$r$(dirname "$vmctl")"
mount --bind "$home" "$r$home"; mount --bind "$images" "$r$images"
mount --bind "$(dirname "$vmctl")" "$r$(dirname "$vmctl")"
exec chroot "$r" /bin/sh -c '
  "$0" --home "$1" create inch --start --wait 2>&1 | grep -c "runs without the jail: the root directory is not a mount point"
  "$0" --home "$1" status --json inch | jq -r .jail.jailed
  "$0" --home "$1" exec inch -- echo ok
  "$0" --home "$1" --json doctor 2>/dev/null | jq -r ".[] | select(.name == \"jail\") | .status"
  "$0" --home "$1" destroy --force inch >/dev/null && echo destroyed
' "$vmctl" "$home"
EOF
images=$(readlink -f "$VMCTL_TEST_IMAGES")
# the home's images link points at the test images: the same path inside
got=$(unshare -m bash "$ROOTS/inner.sh" "$ROOTS" "$VMCTL_HOME" "$images" "$(readlink -f "$VMCTL")" 2>&1 |
  tr '\n' ' ')
expect_eq "in a chroot into a plain directory: notice, unjailed, works, doctor warns, destroyed" \
  "$got" "1 false ok warn destroyed "
rmdir "$ROOTS" 2>/dev/null || rm -rf "$ROOTS"
expect_eq "nothing is left" "$(vm list --json | jq length)" 0
finish
