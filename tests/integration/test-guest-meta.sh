#!/bin/bash
# What the default guest knows about itself (issue 17): the VM's name is its hostname (kernel
# command line and agent push), `create --env` reaches every exec (exec --env overrides it), also
# for a VM started without --wait, for a guest without vmctl.hostname on its command line and
# after the agent restarted; eth0 is configured with --net user (a port forward reaches busybox
# httpd from the host's loopback) and nothing with --net none; a missing command exits 127, a
# non-executable one 126, with a shell-like message on stderr.
. "$(dirname "$0")/lib.sh"
need_guest
setup_home
command -v curl >/dev/null || skip "curl is needed to fetch from the guest's httpd"

# --- hostname: run --rm, as the README shows
out=$(vm run demo --rm -- uname -n 2>/dev/null)
expect_eq "run demo --rm -- uname -n" "$out" demo
out=$(vm run demo2 --rm -- uname -a 2>/dev/null)
case $out in "Linux demo2 "*) ok "uname -a starts with 'Linux demo2'" ;; *) fail "uname -a: '$out'" ;; esac

# --- create --env, start --wait: every exec gets it, exec --env wins
vm create e1 --env A=1 --env 'B=two words' >/dev/null || fail "create e1"
vm start e1 --wait >/dev/null 2>&1 || fail "start e1"
expect_eq "hostname in exec" "$(vm exec e1 -- hostname)" e1
expect_eq "create --env reaches exec" "$(vm exec e1 -- sh -c 'echo $A')" 1
expect_eq "value with a space" "$(vm exec e1 -- sh -c 'echo "$B"')" "two words"
expect_eq "exec --env overrides it" "$(vm exec e1 --env A=2 -- sh -c 'echo $A')" 2
expect_eq "and only for that exec" "$(vm exec e1 -- sh -c 'echo $A')" 1
expect_eq "/run/vmctl/env for login shells" "$(vm exec e1 -- sh -c '. /run/vmctl/env; echo $A')" 1
expect_eq "/etc/hostname" "$(vm exec e1 -- cat /etc/hostname)" e1

# --- the agent restarted (killed, /init starts it again): the new one gets it again
apid=$(vm exec e1 -- pidof vmctl-agent)
vm exec e1 -- sh -c 'setsid sh -c "sleep 0.3; kill -9 \$(pidof vmctl-agent)" >/dev/null 2>&1 &' ||
  fail "schedule the agent's death"
deadline=$((SECONDS + 60)) npid=$apid
while [ $SECONDS -lt $deadline ]; do
  sleep 0.5
  npid=$(vm exec e1 -- pidof vmctl-agent 2>/dev/null) && [ -n "$npid" ] && [ "$npid" != "$apid" ] &&
    break
done
[ -n "$npid" ] && [ "$npid" != "$apid" ] && ok "the agent restarted" ||
  fail "the agent (pid $apid) did not restart"
expect_eq "env after the agent restarted" "$(vm exec e1 -- sh -c 'echo $A')" 1

# --- start without --wait: the first exec brings it
vm create e2 --env A=3 >/dev/null || fail "create e2"
vm start e2 >/dev/null 2>&1 || fail "start e2"
expect_eq "first exec after start without --wait" "$(vm exec e2 -- sh -c 'echo $A; hostname')" "3
e2"

# --- a guest without vmctl.hostname on its command line: the agent's push alone
img=$VMCTL_TEST_IMAGES/default
cmdline=$(vm status --json e1 | jq -r .cmdline | sed 's/ *vmctl\.hostname=[^ ]*//')
case $cmdline in *vmctl.hostname*) fail "cmdline still has vmctl.hostname: $cmdline" ;; esac
vm create k1 --kernel "$img/vmlinux" --initrd "$img/initrd.img" --cmdline "$cmdline" --env A=4 \
  >/dev/null || fail "create k1"
vm start k1 --wait >/dev/null 2>&1 || fail "start k1"
expect_eq "hostname pushed by the agent" "$(vm exec k1 -- sh -c 'hostname; echo $A')" "k1
4"
vm destroy --force k1 >/dev/null

# --- exit statuses of commands that cannot run: 127 and 126, like a shell
vm exec e1 -- no-such-command 2>"$VMCTL_HOME/err"; rc=$?
expect_eq "missing command exits 127" "$rc" 127
expect_eq "its message" "$(cat "$VMCTL_HOME/err")" "vmctl-agent: no-such-command: command not found"
vm exec e1 -- /no/such/path 2>"$VMCTL_HOME/err"; rc=$?
expect_eq "missing path exits 127" "$rc/$(cat "$VMCTL_HOME/err")" \
  "127/vmctl-agent: /no/such/path: No such file or directory"
vm exec e1 -- sh -c 'printf "#!/bin/sh\necho hi\n" >/tmp/noexec; chmod 644 /tmp/noexec' ||
  fail "make /tmp/noexec"
vm exec e1 -- /tmp/noexec 2>"$VMCTL_HOME/err"; rc=$?
expect_eq "non-executable file exits 126" "$rc/$(cat "$VMCTL_HOME/err")" \
  "126/vmctl-agent: /tmp/noexec: Permission denied"
vm exec e1 -- /tmp 2>/dev/null; expect_eq "a directory exits 126" "$?" 126
out=$(vm --json exec e1 -- no-such-command); rc=$?
expect_eq "--json: exit_code 127 and the message" \
  "$rc/$(jq -c '[.exit_code, .signal, .stderr]' <<<"$out")" \
  '127/[127,null,"vmctl-agent: no-such-command: command not found\n"]'
vm run nx --rm -- no-such-command 2>/dev/null; expect_eq "run -- missing command exits 127" "$?" 127
vm destroy --force e1 >/dev/null
vm destroy --force e2 >/dev/null

# --- --net none: nothing configured
vm run quiet --net none >/dev/null 2>&1 || fail "run quiet"
# wait for the background part of /init to load its last module (vsock's, after virtio_net)
deadline=$((SECONDS + 60))
until vm exec quiet -- test -e /sys/module/vmw_vsock_virtio_transport || [ $SECONDS -ge $deadline ]; do
  sleep 0.3
done
expect_eq "--net none: only lo" "$(vm exec quiet -- ls /sys/class/net)" lo
vm exec quiet -- test -e /etc/resolv.conf; expect_eq "--net none: no resolv.conf" "$?" 1
vm destroy --force quiet >/dev/null

# --- --net user: eth0 up with QEMU's user-net addresses, the forward reaches busybox httpd
vm run web --net user --port 0:80 >/dev/null 2>&1 || fail "run web"
port=$(vm status --json web | jq -r '.ports[] | select(.guest == 80) | .host')
vm exec web -- sh -c 'mkdir -p /www && echo "hello from $(hostname)" >/www/index.html &&
  httpd -p 80 -h /www' || fail "start httpd"
deadline=$((SECONDS + 60)) body=
while [ $SECONDS -lt $deadline ]; do
  body=$(curl -sf --max-time 5 "http://127.0.0.1:$port/index.html") && break
  sleep 0.3
done
expect_eq "GET 127.0.0.1:$port through the forward" "$body" "hello from web"
expect_eq "eth0 address" "$(vm exec web -- sh -c "ip -4 -o addr show eth0 | awk '{print \$4}'")" \
  10.0.2.15/24
expect_eq "default route" "$(vm exec web -- sh -c "ip route | awk '\$1 == \"default\" {print \$3}'")" \
  10.0.2.2
expect_eq "resolver" "$(vm exec web -- cat /etc/resolv.conf)" "nameserver 10.0.2.3"
vm destroy --force web >/dev/null
finish
