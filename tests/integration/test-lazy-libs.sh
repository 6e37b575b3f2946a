#!/bin/bash
# libcurl, libssh, libcrypto, libzstd, liblzma, libnftables and libsystemd are loaded on first use
# (src/lib/dl.c), not at start-up: commands that do not need them must not map them (the dynamic
# loader's own trace, LD_DEBUG=libs, says what each vmctl process loaded), the commands that do need
# them still work, and a library that cannot be loaded (hidden in a private mount namespace) is a
# clean host::missing_dependency naming the library and its Debian package, with nothing left
# behind.
source "$(dirname "$0")/lib.sh"
command -v jq >/dev/null || skip "jq is not installed"
command -v qemu-img >/dev/null || skip "qemu-img is not installed"
command -v zstd >/dev/null && command -v xz >/dev/null || skip "zstd or xz is not installed"
# our own image cache (this test pulls into it), with the default guest linked in when built
export VMCTL_HOME
VMCTL_HOME=$(mktemp -d "/tmp/vmctl-$TEST_NAME.XXXXXX")
trap cleanup EXIT
mkdir -p "$VMCTL_HOME/images"
have_guest=false
if [ -n "${VMCTL_TEST_IMAGES:-}" ] && [ -f "$VMCTL_TEST_IMAGES/default/vmlinux" ]; then
  ln -s "$VMCTL_TEST_IMAGES/default" "$VMCTL_HOME/images/default"
  have_guest=true
fi

# libsystemd (the VMs' scopes) only when systemd runs the host: then a jailed start needs it
sd='|systemd'
[ -e /run/systemd/system ] && sd=
heavy="^lib(curl|ssh|crypto|ssl|gnutls|nghttp2|krb5|gssapi_krb5|ldap|zstd|lzma|nftables|mnl|nftnl$sd)[.-]"

# libs_of CMD...: run vmctl CMD under LD_DEBUG=libs; the exit status in $rc, stdout in $out, and in
# $libs the sonames the vmctl process itself loaded, one a line (children such as qemu-img write
# their own trace file, which initialises another program, and are left out); "no-trace" when
# there is none.
libs_of() {
  local trace=$VMCTL_HOME/ld
  rm -rf "$trace" && mkdir -p "$trace"
  out=$(LD_DEBUG=libs LD_DEBUG_OUTPUT=$trace/ld "$VMCTL" "$@" 2>"$VMCTL_HOME/stderr")
  rc=$?
  local own
  # vmctl's own trace, not its children's (QEMU, ...): the one that initialises the vmctl binary
  own=$(grep -lF "initialize program: $(readlink -f "$VMCTL")" "$trace"/ld.* 2>/dev/null)
  [ -n "$own" ] || { libs=no-trace; return; }
  # shellcheck disable=SC2086
  libs=$(grep -ohE '(calling init: |file=)[^ ]+' $own | sed 's|.*[/=]||' | sort -u)
}

# light WHAT CMD...: CMD succeeds (or fails with the expected exit status in $want) and loads none
# of the heavy libraries
light() {
  local what=$1; shift
  libs_of "$@"
  if grep -qx no-trace <<<"$libs"; then fail "$what: no loader trace"; return; fi
  # a trace that records libraries at all (the CLI links libvmctl statically when it can)
  grep -q '^libc\.so' <<<"$libs" || fail "$what: the trace shows no library loaded"
  expect_eq "$what: exit status" "$rc" "${want:-0}"
  local bad
  bad=$(grep -E "$heavy" <<<"$libs" | tr '\n' ' ')
  if [ -z "$bad" ]; then ok "$what loads no heavy library"; else fail "$what loaded: $bad"; fi
}

# loads WHAT LIB-REGEX CMD...: CMD succeeds and loaded a library matching LIB-REGEX
loads() {
  local what=$1 re=$2; shift 2
  libs_of "$@"
  expect_eq "$what: exit status" "$rc" 0
  if grep -qE "$re" <<<"$libs"; then ok "$what loads $re"; else fail "$what did not load $re"; fi
  LAST_LIBS=$libs
}

light "--version" --version
light "--help" --help
light "errors" errors
light "list" list
light "list --json" --json list
light "image list" image list

# the loader trace does see what the commands that need the libraries load
www=$VMCTL_HOME/www
mkdir -p "$www"
head -c 1M /dev/urandom >"$www/plain.raw"
zstd -q -k "$www/plain.raw" -o "$www/plain.raw.zst"
xz -k -T1 -c "$www/plain.raw" >"$www/plain.raw.xz"
loads "image pull file://" '^libcurl\.so' --json image pull "file://$www/plain.raw" --name p1
expect_eq "image pull file://: format" "$(jq -r .format <<<"$out")" raw
# (libcurl itself needs libcrypto and libzstd; liblzma is ours alone)
grep -qE '^liblzma\.so' <<<"$LAST_LIBS" && fail "an uncompressed pull loaded liblzma" ||
  ok "an uncompressed pull loads no liblzma"
loads "image pull .zst" '^libzstd\.so' --json image pull "file://$www/plain.raw.zst" --name p2
cmp -s "$www/plain.raw" "$VMCTL_HOME/images/p2/disk" && ok "zstd decompressed" || fail "zstd content"
grep -qE '^liblzma\.so' <<<"$LAST_LIBS" && fail ".zst pull loaded liblzma" || ok ".zst pull: no liblzma"
loads "image pull .xz" '^liblzma\.so' --json image pull "file://$www/plain.raw.xz" --name p3
cmp -s "$www/plain.raw" "$VMCTL_HOME/images/p3/disk" && ok "xz decompressed" || fail "xz content"
loads "image import (checksum)" '^libcrypto\.so' --json image import "$www/plain.raw" --name i1
grep -qE '^libcurl\.so' <<<"$LAST_LIBS" && fail "import loaded libcurl" || ok "import: no libcurl"
light "image list with images" image list
light "image inspect" --json image inspect p1

# with a VM in the store (create makes its SSH key: libssh, but never libcurl)
if $have_guest; then
  loads "create" '^libssh\.so' create lz1
  grep -qE '^libcurl\.so' <<<"$LAST_LIBS" && fail "create loaded libcurl" || ok "create: no libcurl"
  light "list with a VM" --json list
  light "status NAME" status lz1
  light "status --json NAME" --json status lz1
  want=1 light "exec on a stopped VM (refused)" exec lz1 -- true
  # the command the issue's goal is about: exec through the agent of a running VM
  light "start --wait" start lz1 --wait
  light "exec through the agent" exec lz1 -- true
  light "status of a running VM" --json status lz1
  expect_eq "running" "$(jq -r .state <<<"$out")" running
  light "stop" stop lz1
  vm destroy --force lz1 >/dev/null || fail "destroy lz1"
else
  skip_section "the checks with a VM in the store: the default guest was not built (run scripts/test.sh, which builds it first)"
fi

# A library that cannot be loaded: bind /dev/null over it in a private mount namespace.
# hidden LIB CMD...: run vmctl --json CMD with LIB unloadable; $out, $rc
hidden() {
  local lib=$1; shift
  local path
  path=$(ldconfig -p | awk -v l="$lib" '$1 == l && /x86-64/ { print $NF; exit }')
  [ -n "$path" ] || { rc=missing; return; }
  out=$(unshare --mount --propagation private bash -c 'mount --bind /dev/null "$1" && shift && exec "$@"' \
    _ "$path" "$VMCTL" --json "$@" 2>/dev/null)
  rc=$?
}
# expect_missing WHAT LIB PACKAGE: the last hidden run failed cleanly, naming LIB and PACKAGE
expect_missing() {
  expect_eq "$1: exit status" "$rc" 1
  expect_eq "$1: code" "$(jq -r .error.code <<<"$out")" vm_manager::host::missing_dependency
  expect_eq "$1: library detail" "$(jq -r .error.details.library <<<"$out")" "$2"
  expect_eq "$1: package detail" "$(jq -r .error.details.package <<<"$out")" "$3"
  grep -qF "apt-get install $3" <<<"$(jq -r .error.help <<<"$out")" && ok "$1: help names $3" ||
    fail "$1: help: $(jq -r .error.help <<<"$out")"
}

if unshare --mount --propagation private true 2>/dev/null; then
  hidden libcurl.so.4 image pull "file://$www/plain.raw" --name gone
  expect_missing "pull without libcurl" libcurl.so.4 libcurl4
  [ -e "$VMCTL_HOME/images/gone" ] && fail "a failed pull left an image" || ok "pull without libcurl left no image"
  hidden liblzma.so.5 image pull "file://$www/plain.raw.xz" --name gone
  expect_missing "pull .xz without liblzma" liblzma.so.5 liblzma5
  [ -e "$VMCTL_HOME/images/gone" ] && fail "a failed pull left an image" || ok "pull without liblzma left no image"
  hidden libcrypto.so.3 image import "$www/plain.raw" --name gone
  expect_missing "import without libcrypto" libcrypto.so.3 libssl3
  [ -e "$VMCTL_HOME/images/gone" ] && fail "a failed import left an image" || ok "import without libcrypto left no image"
  if $have_guest; then
    hidden libssh.so.4 create lzgone
    expect_missing "create without libssh" libssh.so.4 libssh-4
    expect_eq "create without libssh left no VM" "$(vm --json list | jq length)" 0
    [ -e "$VMCTL_HOME/vms/lzgone" ] && fail "create left its VM directory" || ok "create left no VM directory"
  fi
  # doctor names the library that does not load and the package that brings it
  hidden libzstd.so.1 doctor
  st=$(jq -r '.[] | select(.name == "libzstd.so.1") | .status' <<<"$out" 2>/dev/null)
  [ "$st" = warn ] && ok "doctor: libzstd.so.1 does not load (warn)" ||
    fail "doctor without libzstd: $(head -c 600 <<<"$out")"
  grep -q "apt-get install libzstd1" <<<"$out" && ok "doctor: help names libzstd1" ||
    fail "doctor: no help for libzstd1"
  # the libraries are all there again outside the namespace
  loads "pull after the hidden runs" '^libcurl\.so' --json image pull "file://$www/plain.raw" --name p4
else
  skip_section "the missing-library checks: cannot make a private mount namespace (they need root)"
fi

finish
