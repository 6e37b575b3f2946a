#!/bin/bash
# End to end with a disk image a user would really boot: the Debian 12 test image
# (guest/build-debian-image.sh: debootstrap, cloud kernel, cloud-init, openssh-server,
# vmctl-agent as a service; built once and cached in ~/.cache/vmctl/debian12) is imported,
# booted on q35 under TCG from a qcow2 overlay with our own cloud-init seed ISO, and from inside
# the guest (vmctl exec through the agent) we check that cloud-init applied the hostname, the
# user, its SSH key and passwordless sudo. Slow (a few minutes under TCG).
source "$(dirname "$0")/lib.sh"
for t in qemu-system-x86_64 debootstrap mkfs.ext4 sfdisk grub-mkimage; do
  command -v $t >/dev/null || skip "$t is not installed"
done
[ "$(id -u)" -eq 0 ] || skip "debootstrap needs root"
agent=${VMCTL_AGENT:-$(dirname "$VMCTL")/../agent/vmctl-agent}
[ -x "$agent" ] || skip "vmctl-agent not found next to vmctl ($agent)"
cache=${VMCTL_DEBIAN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vmctl/debian12}
out=$cache/out

# (the script serialises concurrent builds itself)
bash "$(dirname "$0")/../../guest/build-debian-image.sh" "$out" "$agent" "$cache" >/dev/null ||
  { echo "FAIL: building the Debian test image"; exit 1; }

export VMCTL_HOME
VMCTL_HOME=$(mktemp -d /tmp/vmctl-image-debian.XXXXXX)
trap '"$VMCTL" destroy --force deb >/dev/null 2>&1; rm -rf "$VMCTL_HOME"' EXIT
ssh-keygen -q -t ed25519 -N "" -C vmctl-test -f "$VMCTL_HOME/key" >/dev/null

vm image import "$out/debian12.raw" --name debian12 >/dev/null && ok "import the Debian image" || fail "import"
vm create deb --image debian12 --memory 1024 --ssh-key "$VMCTL_HOME/key.pub" >/dev/null && ok "create" || fail "create"
t0=$(date +%s.%N)
if ! vm start deb --wait --timeout 600 >/dev/null; then
  fail "the Debian image did not become ready: $(tail -20 "$VMCTL_HOME/vms/deb/console.log")"
  finish
fi
ok "q35 boot to ready in $(echo "$(date +%s.%N) - $t0" | bc) s"
expect_eq "machine" "$(vm --json status deb | jq -r .machine)" q35

st=$(vm exec deb --timeout 600 -- cloud-init status --wait 2>/dev/null | tail -1)
expect_eq "cloud-init finished" "$st" "status: done"
expect_eq "hostname from meta-data" "$(vm exec deb -- hostname)" deb
expect_eq "datasource is our seed" "$(vm exec deb -- sh -c 'cat /run/cloud-init/cloud-id 2>/dev/null || cloud-id')" nocloud
vm exec deb -- id vmctl >/dev/null && ok "default user exists" || fail "default user vmctl missing"
key=$(cut -d' ' -f2 "$VMCTL_HOME/key.pub")
vm exec deb -- cat /home/vmctl/.ssh/authorized_keys | grep -qF "$key" && ok "user has the key" || fail "authorized_keys"
expect_eq "passwordless sudo" "$(vm exec deb -- runuser -u vmctl -- sudo -n id -un 2>/dev/null)" root
seed_dev=$(vm exec deb -- blkid -t LABEL=cidata -o device 2>/dev/null)
[ -n "$seed_dev" ] && ok "guest blkid finds the cidata seed ($seed_dev)" || fail "guest cannot see the seed"
expect_eq "no failed units" "$(vm exec deb -- systemctl --failed --no-legend --plain | cut -d' ' -f1 | tr '\n' ' ')" ""
addr=$(vm exec deb -- ip -4 -br addr show eth0)
grep -q ' 10\.0\.2\.15/' <<<"$addr" && ok "network-config applied: eth0 has its DHCP address" || fail "eth0: $addr"
stop_out=$(vm stop deb --timeout 120 2>&1) && ok "graceful stop" || fail "stop: $stop_out"
qemu-img check -q "$VMCTL_HOME/vms/deb/disk.qcow2" && ok "overlay consistent after the boot" || fail "overlay check"
# ($out may be rebuilt meanwhile by another test: compare with the stamp taken at import)
expect_eq "the cached base is unchanged" "$(sha256sum <"$VMCTL_HOME/images/debian12/disk" | cut -d' ' -f1)" \
  "$(vm --json image inspect debian12 | jq -r .sha256)"
finish
