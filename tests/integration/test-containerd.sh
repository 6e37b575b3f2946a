#!/bin/bash
# containerd-shim-vmctl-v2 (issue 13) under a private containerd (its own root, state, sockets
# and config under a temp dir): `ctr run --runtime io.containerd.vmctl.v2` runs the process in a
# VM (the guest's kernel answers uname, not the host's) and returns its exit code; exec, pause and
# resume, kill, metrics, the order of the events; a locally built OCI image through containerd's
# snapshotter; kill -9 of the shim leaves no QEMU, virtiofsd, mount or VM behind.
. "$(dirname "$0")/lib.sh"
need_guest
command -v containerd >/dev/null && command -v ctr >/dev/null ||
  skip "containerd is not installed (Debian package containerd)"
[ -n "${SHIM:-}" ] && [ -x "$SHIM" ] ||
  skip "containerd-shim-vmctl-v2 was not built (needs protobuf-c-compiler, libprotobuf-c-dev and golang-github-containerd-containerd-dev)"
[ "$(id -u)" = 0 ] || skip "containerd needs root"
[ -x /usr/lib/qemu/virtiofsd ] || skip "virtiofsd is not installed (Debian package qemu-system-common)"
setup_home
T=$(mktemp -d /tmp/vmctl-ctd.XXXXXX)
ctd_pid=
ctd_cleanup() {
  local id
  for id in $(ctr --address "$T/c.sock" task ls -q 2>/dev/null); do
    ctr --address "$T/c.sock" task kill -s SIGKILL "$id" >/dev/null 2>&1
    sleep 1
    ctr --address "$T/c.sock" task delete -f "$id" >/dev/null 2>&1
  done
  [ -n "$ctd_pid" ] && kill "$ctd_pid" 2>/dev/null && wait "$ctd_pid" 2>/dev/null
  grep -o " $T/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
  rm -rf "$T"
  cleanup
}
trap ctd_cleanup EXIT

# the rootfs: Debian's static busybox (the .deb the default guest's build fetched) and its applets
deb=$(ls "${XDG_CACHE_HOME:-$HOME/.cache}"/vmctl/debs/busybox-static_*.deb 2>/dev/null | tail -1)
if [ -z "$deb" ]; then
  (cd "$T" && apt-get download busybox-static >/dev/null 2>&1)
  deb=$(ls "$T"/busybox-static_*.deb 2>/dev/null | tail -1)
fi
[ -n "$deb" ] || skip "no busybox-static .deb (build the default guest first: vmctl image build-default)"
R=$T/rootfs
mkdir -p "$R"/{bin,proc,sys,dev,tmp,etc}
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$T" ./bin/busybox
cp "$T/bin/busybox" "$R/bin/busybox"
for a in $("$R/bin/busybox" --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
echo "root:x:0:0:root:/root:/bin/sh" >"$R/etc/passwd"

cat >"$T/config.toml" <<EOF
version = 2
root = "$T/root"
state = "$T/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$T/c.sock"
[ttrpc]
  address = "$T/c.sock.ttrpc"
EOF
# containerd finds the runtime io.containerd.vmctl.v2 as containerd-shim-vmctl-v2 on its PATH;
# the shim makes its VMs in this test's $VMCTL_HOME (containerd's environment is the shim's)
PATH=$(dirname "$SHIM"):$PATH containerd --config "$T/config.toml" >"$T/containerd.log" 2>&1 &
ctd_pid=$!
for _ in $(seq 200); do ctr --address "$T/c.sock" version >/dev/null 2>&1 && break; sleep 0.1; done
c() { timeout 300 ctr --address "$T/c.sock" "$@"; }
c version >/dev/null 2>&1 || { fail "the private containerd did not come up: $(tail -5 "$T/containerd.log")"; finish; }
c events >"$T/events" 2>&1 &
events_pid=$!

guest_kernel=$(sed -n 's/^kernel_package=linux-image-//p' "$VMCTL_TEST_IMAGES/default/manifest")
out=$(c run --rm --runtime io.containerd.vmctl.v2 --rootfs "$R" r1 sh -c 'uname -r; exit 5' </dev/null 2>&1)
rc=$?
expect_eq "ctr run: the guest's kernel answers uname -r (host: $(uname -r))" "$out" "$guest_kernel"
expect_eq "ctr run: the exit code" "$rc" 5
[ "$out" != "$(uname -r)" ] || fail "ctr run printed the host's kernel"

# volumes: host directories bound into the container (the OCI spec's bind mounts), rw and ro
mkdir -p "$T/vol" "$T/rovol"
echo from-host >"$T/vol/in"
echo ro-file >"$T/rovol/f"
out=$(c run --rm --runtime io.containerd.vmctl.v2 \
  --mount "type=bind,src=$T/vol,dst=/data,options=rbind:rw" \
  --mount "type=bind,src=$T/rovol,dst=/srv/ro,options=rbind:ro" --rootfs "$R" v1 \
  sh -c 'cat /data/in /srv/ro/f; echo from-guest >/data/out; (echo x >/srv/ro/g) 2>/dev/null && echo wrote-ro; exit 0' </dev/null 2>&1)
expect_eq "volumes: both read in the container" "$out" "from-host
ro-file"
expect_eq "a rw volume: the container's write is on the host" "$(cat "$T/vol/out" 2>/dev/null)" from-guest
[ -e "$T/rovol/g" ] && fail "a read-only volume was written" || ok "a read-only volume stays unwritten"

# a pod's network namespace (made here as a CNI plugin leaves it: eth0 with an address and a
# default route, a peer with a TCP server): the container's VM takes it over, so the container
# reaches the peer from the pod's address (--with-ns sets linux.namespaces' network path)
POD=vmctl-ctd-pod$$ PEER=vmctl-ctd-peer$$
if ip netns add "$POD" && ip netns add "$PEER"; then
  ip link add cd0 netns "$POD" type veth peer name cd1 netns "$PEER"
  ip -n "$POD" link set cd0 name eth0
  ip -n "$POD" addr add 10.65.0.2/24 dev eth0 && ip -n "$POD" link set eth0 up
  ip -n "$POD" link set lo up && ip -n "$POD" route add default via 10.65.0.1
  ip -n "$PEER" addr add 10.65.0.1/24 dev cd1 && ip -n "$PEER" link set cd1 up
  ip netns exec "$PEER" python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.65.0.1", 7100)); s.listen(4)
while True:
    c, a = s.accept(); c.sendall(("peer sees " + a[0] + "\n").encode()); c.close()' &
  peer_pid=$!
  out=$(c run --rm --runtime io.containerd.vmctl.v2 --with-ns "network:/var/run/netns/$POD" \
    --rootfs "$R" n1 sh -c 'for i in $(seq 40); do ip -o -4 addr show eth0 2>/dev/null | grep -q 10.65.0.2 && break; sleep 0.25; done
      for i in 1 2 3 4 5; do nc -w 3 10.65.0.1 7100 && break; sleep 0.5; done' </dev/null 2>&1)
  expect_eq "a pod's network namespace: the container reaches its peer as the pod" "$out" \
    "peer sees 10.65.0.2"
  expect_eq "... and nothing of it is left in the pod's namespace" \
    "$(ip -n "$POD" -o link show | grep -c vmctl0):$(tc -n "$POD" qdisc show dev eth0 | grep -c ingress)" "0:0"
  kill "$peer_pid" 2>/dev/null
  ip netns del "$POD"; ip netns del "$PEER"
else
  fail "cannot make network namespaces for the pod network check"
fi

# the init process on a terminal (ctr run -t: ctr wants one of its own, script gives it a pty)
if have script util-linux "ctr run -t"; then
  out=$(script -qec "timeout --foreground 180 ctr --address $T/c.sock run --rm -t --runtime io.containerd.vmctl.v2 --rootfs $R r2 sh -c 'tty; stty size; exit 6'" /dev/null </dev/null)
  rc=$?
  grep -q "/dev/pts/[0-9]" <<<"$out" && ok "ctr run -t: the init process has a terminal" ||
    fail "ctr run -t: tty said '$out'"
  expect_eq "ctr run -t: the exit code" "$rc" 6
fi

# a long-running task: exec, pause/resume, metrics, kill
c run -d --runtime io.containerd.vmctl.v2 --rootfs "$R" t2 sh -c 'echo $$ >/tmp/init; sleep 600' </dev/null ||
  fail "ctr run -d"
expect_eq "ctr task ls: running" "$(c task ls | awk '$1=="t2"{print $3}')" RUNNING
out=$(c task exec --exec-id e1 t2 sh -c 'echo "in $(pwd) as $(id -u)"; cat /tmp/init >/dev/null && exit 7' </dev/null)
expect_eq "ctr task exec: the exit code" "$?" 7
expect_eq "ctr task exec: its output (in the container's root)" "$out" "in / as 0"
c task exec --exec-id e2 --cwd /tmp t2 sh -c 'test "$(pwd)" = /tmp && test -f init' </dev/null
expect_eq "ctr task exec --cwd" "$?" 0
out=$(echo piped | c task exec --exec-id e3 t2 cat)
expect_eq "ctr task exec: stdin" "$out" piped
out=$(c task exec --exec-id e4 --user 1000:1000 t2 sh -c 'echo $(id -u):$(id -g)' </dev/null)
expect_eq "ctr task exec --user: the process's uid:gid" "$out" "1000:1000"
# a terminal (ctr -t wants one of its own: script gives it a pty)
if have script util-linux "ctr task exec -t"; then
  out=$(script -qec "timeout --foreground 120 ctr --address $T/c.sock task exec -t --exec-id e5 t2 sh -c 'tty; exit 4'" /dev/null </dev/null)
  rc=$?
  grep -q "/dev/pts/[0-9]" <<<"$out" && ok "ctr task exec -t: the process has a terminal" ||
    fail "ctr task exec -t: tty said '$out'"
  expect_eq "ctr task exec -t: the exit code" "$rc" 4
fi
c task pause t2 || fail "ctr task pause"
expect_eq "paused" "$(c task ls | awk '$1=="t2"{print $3}')" PAUSED
qpid=$(c task ls | awk '$1=="t2"{print $2}')
expect_eq "the VM's QEMU is stopped (QMP stop)" "$(vm status --json "$(vm list --json | jq -r '.[0].name')" | jq -r .state)" paused
out=$(c task exec --exec-id ep t2 true 2>&1 </dev/null) && fail "an exec in a paused task started" ||
  { grep -q "is paused" <<<"$out" && ok "an exec in a paused task is refused: it says so" ||
    fail "an exec in a paused task: $out"; }
c task resume t2 || fail "ctr task resume"
expect_eq "resumed" "$(c task ls | awk '$1=="t2"{print $3}')" RUNNING
m=$(c task metrics t2)
cpu=$(awk '$1=="cpu.usage_usec"{print $2}' <<<"$m")
mem=$(awk '$1=="memory.usage"{print $2}' <<<"$m")
[ "${cpu:-0}" -gt 0 ] && [ "${mem:-0}" -gt 0 ] && ok "ctr task metrics: cpu $cpu us, memory $mem bytes" ||
  fail "ctr task metrics: $m"
expect_eq "ctr task ps: the VM's hypervisor pid" "$(c task ps t2 | awk 'NR==2{print $1}')" "$qpid"
c task exec --exec-id e6 t2 sleep 600 </dev/null &
exec_pid=$!
sleep 2
c task kill -s SIGTERM t2 || fail "ctr task kill"
for _ in $(seq 100); do [ "$(c task ls | awk '$1=="t2"{print $3}')" = STOPPED ] && break; sleep 0.1; done
expect_eq "killed: stopped" "$(c task ls | awk '$1=="t2"{print $3}')" STOPPED
for _ in $(seq 100); do [ -d "/proc/$exec_pid" ] || break; sleep 0.1; done
wait "$exec_pid"
expect_eq "an exec still running when the init process ends is killed (137)" "$?" 137
c task delete t2 >/dev/null 2>&1 || fail "ctr task delete"
c container rm t2 || fail "ctr container rm"
# the shim publishes from a queue of its own: its last event may come a moment later
for _ in $(seq 300); do grep -q '/tasks/delete .*"container_id":"t2"' "$T/events" && break; sleep 0.1; done
kill "$events_pid" 2>/dev/null
wait "$events_pid" 2>/dev/null
order=$(awk '/container_id":"t2"/ {print $6}' "$T/events" | awk '!seen[$0]++' | paste -sd' ')
expect_eq "events of t2 in order" "$order" \
  "/tasks/create /tasks/start /tasks/exec-added /tasks/exec-started /tasks/exit /tasks/paused /tasks/resumed /tasks/delete"
exits=$(grep -c '/tasks/exit .*"container_id":"t2","id":"t2".*"exit_status":143' "$T/events")
expect_eq "the init's TaskExit (SIGTERM: 143)" "$exits" 1
expect_eq "no VM left after delete" "$(vm list --json | jq length)" 0

# an OCI image built here (one layer: the busybox rootfs), through containerd's snapshotter
img=$T/img
mkdir -p "$img/blobs/sha256"
tar -C "$R" -cf "$T/layer.tar" .
ld=$(sha256sum "$T/layer.tar" | cut -d' ' -f1)
mv "$T/layer.tar" "$img/blobs/sha256/$ld"
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$ld" >"$T/cfg"
cd_=$(sha256sum "$T/cfg" | cut -d' ' -f1)
mv "$T/cfg" "$img/blobs/sha256/$cd_"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
  "$cd_" "$(stat -c %s "$img/blobs/sha256/$cd_")" "$ld" "$(stat -c %s "$img/blobs/sha256/$ld")" >"$T/man"
md=$(sha256sum "$T/man" | cut -d' ' -f1)
ms=$(stat -c %s "$T/man")
mv "$T/man" "$img/blobs/sha256/$md"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"localhost/vmctl-busybox:test","org.opencontainers.image.ref.name":"test"}}]}' "$md" "$ms" >"$img/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$img/oci-layout"
tar -C "$img" -cf "$T/img.tar" .
if c image import "$T/img.tar" >/dev/null 2>&1 && c image ls -q | grep -q vmctl-busybox; then
  out=$(c run --rm --runtime io.containerd.vmctl.v2 localhost/vmctl-busybox:test i1 sh -c 'echo written >/tmp/x; cat /tmp/x; uname -r; exit 3' </dev/null 2>&1)
  rc=$?
  expect_eq "an imported OCI image through the snapshotter: output" "$out" "written
$guest_kernel"
  expect_eq "an imported OCI image: exit code" "$rc" 3
else
  fail "ctr image import of a locally built OCI image"
fi

# kill -9 of the shim: its VM dies with it (owner-bound); containerd's cleanup (`shim delete`) and
# `ctr task delete` leave no QEMU, virtiofsd, mount or VM behind
c run -d --runtime io.containerd.vmctl.v2 --rootfs "$R" t3 sleep 600 </dev/null || fail "ctr run -d t3"
shim_pid=$(ps -eo pid,comm,args | awk '$2=="containerd-shim" && / -id t3 /{print $1}')
vmname=$(vm list --json | jq -r '.[0].name')
qpid=$(pgrep -f -- "-name $vmname ")
[ -n "$shim_pid" ] && [ -n "$qpid" ] && ok "t3 runs (shim $shim_pid, QEMU $qpid)" || fail "t3 did not come up"
[ -n "$shim_pid" ] && kill -9 "$shim_pid"
for _ in $(seq 100); do [ -d "/proc/$qpid" ] || break; sleep 0.1; done
[ -n "$qpid" ] && [ -d "/proc/$qpid" ] && fail "QEMU outlived its SIGKILLed shim" || ok "QEMU died with its shim"
out=$(c task delete t3 2>&1) || grep -q "not found" <<<"$out" || fail "ctr task delete after kill -9: $out"
c container rm t3 >/dev/null 2>&1
pgrep -f "virtiofsd --socket-path=$VMCTL_HOME/vms/" >/dev/null && fail "virtiofsd left" || ok "no virtiofsd left"
pgrep -f -- "-name $vmname " >/dev/null && fail "QEMU left" || ok "no QEMU left"
grep -q "$T/state" /proc/mounts && fail "a mount is left: $(grep "$T/state" /proc/mounts)" || ok "no mount left"
expect_eq "no VM left after kill -9 and delete" "$(vm list --json | jq length)" 0
[ -d "$VMCTL_HOME/vms/$vmname" ] && fail "its VM directory is left: $(ls -la "$VMCTL_HOME/vms/$vmname" | tr '\n' ' ')" ||
  ok "its VM directory is gone"
finish
