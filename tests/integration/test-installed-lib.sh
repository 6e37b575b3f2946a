#!/bin/bash
# A third party's view of libvmctl: `meson install --destdir` the library and its headers, then
# build a program against the *installed* headers and vmctl.pc alone (pkg-config with the
# destdir as sysroot: no -I into the source tree), run it against the installed libvmctl.so,
# and have it open a context in a temporary home, list VMs and images and print the version.
# Every public header must be installed and compile on its own (as C11 with -pedantic, and as
# C++ through the umbrella header); a header left out of the install fails the build here, which
# the test checks on a copy with one header removed.
source "$(dirname "$0")/lib.sh"
src_root=$(cd "$(dirname "$0")/../.." && pwd)
build=${VMCTL_BUILD_DIR:-$(cd "$(dirname "$VMCTL")/../.." && pwd)}
[ -f "$build/meson-private/coredata.dat" ] || { echo "FAIL: no meson build directory at '$build' (set VMCTL_BUILD_DIR)"; exit 1; }
command -v pkg-config >/dev/null || skip "pkg-config is not installed (Debian package pkg-config)"
command -v cc >/dev/null || skip "cc is not installed (Debian package gcc)"
command -v meson >/dev/null || skip "meson is not installed (Debian package meson)"

work=$(mktemp -d "/tmp/vmctl-$TEST_NAME.XXXXXX")
trap 'rm -rf "$work"' EXIT
dest=$work/dest

check() { # DESCRIPTION COMMAND...
  local d=$1
  shift
  if "$@" >"$work/out" 2>&1; then
    echo "ok: $d"
  else
    echo "FAIL: $d"
    sed 's/^/  | /' "$work/out" | head -30
    fails=$((fails + 1))
  fi
}

if ! meson install -C "$build" --no-rebuild --quiet --destdir "$dest" --tags devel,runtime \
  >"$work/install.log" 2>&1; then
  echo "FAIL: meson install --destdir"
  cat "$work/install.log"
  exit 1
fi
pc=$(find "$dest" -name vmctl.pc -path '*/pkgconfig/*' | head -1)
[ -n "$pc" ] || { echo "FAIL: no vmctl.pc installed"; find "$dest" | sed 's|^|  |'; exit 1; }
incdir=$(find "$dest" -type d -path '*/include/vmctl' | head -1)
[ -n "$incdir" ] || { echo "FAIL: no include/vmctl installed"; exit 1; }

# pkg-config as a consumer runs it for an install under a sysroot
pkgc() {
  PKG_CONFIG_PATH=$(dirname "$pc") PKG_CONFIG_SYSROOT_DIR=$dest pkg-config "$@"
}
check "vmctl.pc: pkg-config --exists vmctl" pkgc --exists vmctl
check "vmctl.pc: version $(pkgc --modversion vmctl) is the build's" \
  grep -qx "#define VMCTL_VERSION *\"$(pkgc --modversion vmctl)\"" <(sed 's/  */ /g' "$incdir/version.h")
flags=$(pkgc --cflags --libs vmctl)
echo "pkg-config --cflags --libs vmctl: $flags"
case " $flags " in
*" -lvmctl "*) echo "ok: vmctl.pc links -lvmctl" ;;
*) echo "FAIL: vmctl.pc does not give -lvmctl"; fails=$((fails + 1)) ;;
esac
case "$flags" in
*"$src_root"* | *"$build"*)
  echo "FAIL: vmctl.pc points into the source or build tree: $flags"
  fails=$((fails + 1))
  ;;
esac
libdir=$(dirname "$(find "$dest" -name 'libvmctl.so' | head -1)")

# every public header of the source is installed, and each compiles on its own
missing=0
for h in "$src_root"/include/vmctl/*.h; do
  [ -f "$incdir/$(basename "$h")" ] || { echo "FAIL: include/vmctl/$(basename "$h") is not installed"; missing=1; }
done
[ -f "$incdir/version.h" ] || { echo "FAIL: the generated vmctl/version.h is not installed"; missing=1; }
[ "$missing" = 0 ] && echo "ok: every public header is installed"
fails=$((fails + missing))
for h in "$incdir"/*.h; do
  printf '#include <vmctl/%s>\ntypedef int not_empty;\n' "$(basename "$h")" >"$work/one.c"
  # shellcheck disable=SC2086
  check "vmctl/$(basename "$h") compiles on its own (C11, -pedantic)" \
    cc -std=c11 -pedantic -Wall -Wextra -Werror $(pkgc --cflags vmctl) -c "$work/one.c" -o "$work/one.o"
done

cat >"$work/consumer.c" <<'EOF'
/* A program using libvmctl the way a third party does. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <vmctl/vmctl.h>

static int fail(const char *what, int r, vmctl_error *e)
{
    fprintf(stderr, "%s: %d %s: %s\n", what, r, vmctl_error_get_code(e), vmctl_error_get_message(e));
    vmctl_error_free(e);
    return 1;
}

int main(int argc, char **argv)
{
    vmctl_error *e = NULL;
    vmctl_ctx *ctx = NULL;
    if (argc != 2)
        return 2;
    if (strcmp(vmctl_version(), VMCTL_VERSION) != 0) {
        fprintf(stderr, "library %s, headers %s\n", vmctl_version(), VMCTL_VERSION);
        return 1;
    }
    int r = vmctl_ctx_open(argv[1], 0, &ctx, &e);
    if (r < 0)
        return fail("vmctl_ctx_open", r, e);
    vmctl_vm_info **vms = NULL;
    size_t n_vms = 0;
    r = vmctl_vm_list(ctx, &vms, &n_vms, &e);
    if (r < 0)
        return fail("vmctl_vm_list", r, e);
    vmctl_vm_info_list_free(vms, n_vms);
    vmctl_image_info *images = NULL;
    size_t n_images = 0;
    r = vmctl_image_list(ctx, &images, &n_images, &e);
    if (r < 0)
        return fail("vmctl_image_list", r, e);
    vmctl_image_info_list_free(images, n_images);
    /* a bad argument is an error, not a crash */
    r = vmctl_vm_start(NULL, "x", false, 0, &e);
    if (r != -EINVAL || strcmp(vmctl_error_get_code(e), "vm_manager::invalid_argument") != 0)
        return fail("vmctl_vm_start(NULL)", r, e);
    vmctl_error_free(e);
    printf("libvmctl %s (version %d.%d.%d): %zu vms, %zu images in %s\n", vmctl_version(),
           VMCTL_VERSION_MAJOR, VMCTL_VERSION_MINOR, VMCTL_VERSION_MICRO, n_vms, n_images,
           vmctl_ctx_get_home(ctx));
    vmctl_ctx_free(ctx);
    return 0;
}
EOF
# shellcheck disable=SC2086
check "a program builds against the installed headers and vmctl.pc" \
  cc -std=c11 -Wall -Wextra -Werror "$work/consumer.c" -o "$work/consumer" $(pkgc --cflags --libs vmctl)
if [ -x "$work/consumer" ]; then
  # the dynamic loader resolves libvmctl.so.0 in the destdir, not in the build tree (no RUNPATH)
  where=$(LD_LIBRARY_PATH=$libdir LD_TRACE_LOADED_OBJECTS=1 "$work/consumer" | awk '$1 == "libvmctl.so.0" {print $3}')
  case "$where" in
  "$libdir"/*) echo "ok: the program loads the installed $where" ;;
  *) echo "FAIL: the program loads libvmctl.so.0 from '$where', not from $libdir"; fails=$((fails + 1)) ;;
  esac
  mkdir -p "$work/home"
  out=$(LD_LIBRARY_PATH=$libdir "$work/consumer" "$work/home" 2>&1)
  rc=$?
  echo "consumer: $out (exit $rc)"
  if [ "$rc" = 0 ] && grep -q "^libvmctl $(pkgc --modversion vmctl) .*: 0 vms, 0 images in $work/home\$" <<<"$out"; then
    echo "ok: the program opens a context, lists VMs and images and prints the version"
  else
    echo "FAIL: the program did not run as expected"
    fails=$((fails + 1))
  fi
fi
if command -v c++ >/dev/null; then
  printf '#include <vmctl/vmctl.h>\nint main() { return vmctl_version() ? 0 : 1; }\n' >"$work/consumer.cc"
  # shellcheck disable=SC2086
  check "a C++ program builds and links against the installed library" \
    c++ -Wall -Wextra -Werror "$work/consumer.cc" -o "$work/consumer-cc" $(pkgc --cflags --libs vmctl)
else
  skip_section "the C++ build of the umbrella header: c++ is not installed (Debian package g++)"
fi

# negative control: the same install with one header vmctl.h includes left out does not build
cp -a "$dest" "$work/dest-broken"
rm "$work/dest-broken/${incdir#"$dest"/}/ssh.h"
# shellcheck disable=SC2086
if PKG_CONFIG_PATH=$(dirname "$pc") PKG_CONFIG_SYSROOT_DIR=$work/dest-broken \
  cc -std=c11 -c "$work/consumer.c" -o "$work/broken.o" \
  $(PKG_CONFIG_PATH=$(dirname "$pc") PKG_CONFIG_SYSROOT_DIR=$work/dest-broken pkg-config --cflags vmctl) \
  >"$work/out" 2>&1; then
  echo "FAIL: the program still builds with vmctl/ssh.h not installed: this test would not see a missing header"
  fails=$((fails + 1))
elif grep -q "vmctl/ssh.h" "$work/out"; then
  echo "ok: without vmctl/ssh.h installed the program does not build (the compiler names it)"
else
  echo "FAIL: the build without vmctl/ssh.h failed for another reason:"
  sed 's/^/  | /' "$work/out" | head -10
  fails=$((fails + 1))
fi

[ "$fails" = 0 ] && echo "PASS: $TEST_NAME" || { echo "FAIL: $TEST_NAME ($fails)"; exit 1; }
