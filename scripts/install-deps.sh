#!/bin/bash
# Installs the Debian 12 packages vm-manager needs to build, run and test. Idempotent.
set -euo pipefail
pkgs=(
  gcc meson ninja-build pkg-config libsqlite3-dev libjansson-dev libcmocka-dev  # build
  qemu-system-x86 qemu-utils qemu-system-common                             # run (virtiofsd: --mount)
  cpio lz4 kmod gzip zstd xz-utils apt                                            # build-default
  sqlite3 jq procps util-linux                                                    # tests
  clang libclang-rt-14-dev                                                        # sanitizers, fuzz
  clang-format                                                                    # scripts/check-format.sh
  libcurl4-openssl-dev libzstd-dev liblzma-dev libssl-dev                         # images
  genisoimage xorriso python3 debootstrap grub-pc-bin fdisk e2fsprogs             # images, tests
  libssh-dev openssh-server openssh-client                                       # ssh
  libmicrohttpd-dev libmicrohttpd12 curl                                          # vmctl serve
  libnftables-dev libnftables1                                                    # TAP firewall
  nftables iproute2 curl                                                          # test-net-tap
  python3-pytest                                                                  # the Python SDK's tests
  protobuf-c-compiler libprotobuf-c-dev containerd runc                           # the containerd shim (src/shim)
  golang-github-containerd-containerd-dev                                         # its .proto files
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The default guest is built from packages fetched with `apt-get download`: the package lists must
# know the cloud kernel even when every tool above was already installed.
if ! apt-cache policy linux-image-cloud-amd64 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  apt-get update -qq
fi
