#!/bin/bash
# vmctl serve: the HTTP API on a unix socket and on loopback TCP with a token, against real VMs
# (docs/api.md): lifecycle, exec streamed as it happens, files, errors with their HTTP status,
# a stalled client not blocking others, the CLI side by side, every route in openapi.json; a
# template snapshot of the same VM: its clones, a warm pool set and listed over the API (the shapes
# of `vmctl pool --json`), a clone taken from it and refilled, the pool removed, a restore.
. "$(dirname "$0")/lib.sh"
need_guest
have curl curl "vmctl serve over HTTP" || finish
have python3 python3 "vmctl serve streaming checks" || finish
setup_home
HERE=$(cd "$(dirname "$0")" && pwd)
SPEC=$HERE/../../docs/api/openapi.json
CHECKS=$HERE/serve-checks.py
SOCK=$VMCTL_HOME/serve.sock
SERVE_PID=

stop_server() {
  if [ -n "$SERVE_PID" ]; then kill "$SERVE_PID" 2>/dev/null; wait "$SERVE_PID" 2>/dev/null; fi
  SERVE_PID=
}
trap 'stop_server; "$VMCTL" pool rm job/pa-base >/dev/null 2>&1; cleanup' EXIT

# --- refusals before anything listens ---
out=$(vm --json serve --foreground --listen 127.0.0.1:0 2>/dev/null); rc=$?
expect_eq "TCP without a token is refused (exit 2)" "$rc" 2
expect_eq "... as cli::usage" "$(jq -r .error.code <<<"$out")" vm_manager::cli::usage
jq -e '.error.help | test("token-file")' <<<"$out" >/dev/null && ok "... its help names --token-file" ||
  fail "help: $out"
echo short >"$VMCTL_HOME/bad-token"
expect_code "a short token is refused" vm_manager::config::invalid \
  serve --foreground --listen 127.0.0.1:0 --token-file "$VMCTL_HOME/bad-token"

# --- the server: unix socket + loopback TCP ---
head -c 32 /dev/urandom | base64 >"$VMCTL_HOME/token"
TOKEN=$(cat "$VMCTL_HOME/token")
"$VMCTL" serve --foreground --listen 127.0.0.1:0 --token-file "$VMCTL_HOME/token" 2>"$VMCTL_HOME/serve.err" &
SERVE_PID=$!
for _ in $(seq 100); do grep -q listening "$VMCTL_HOME/serve.err" 2>/dev/null && break; sleep 0.1; done
URL=$(grep -o 'http://127.0.0.1:[0-9]*' "$VMCTL_HOME/serve.err")
[ -S "$SOCK" ] && [ -n "$URL" ] && ok "server listens on $SOCK and $URL" ||
  { fail "server did not start: $(cat "$VMCTL_HOME/serve.err")"; finish; }
expect_eq "the socket is mode 0600" "$(stat -c %a "$SOCK")" 600

# api METHOD PATH [curl args]: sets ST (HTTP status) and BODY
api() {
  local m=$1 p=$2; shift 2
  ST=$(curl -s --max-time 300 --unix-socket "$SOCK" -X "$m" -o "$VMCTL_HOME/body" -w '%{http_code}' "$@" "http://x$p")
  BODY=$(cat "$VMCTL_HOME/body")
}
# expect_api WHAT STATUS CODE|- : the last answer
expect_api() {
  local code
  code=$(jq -r '.error.code // "-"' <<<"$BODY" 2>/dev/null)
  code=${code:--}
  if [ "$ST" = "$2" ] && [ "$code" = "$3" ]; then ok "$1 ($ST${3#-})"; else fail "$1: got $ST $BODY, expected $2 $3"; fi
}

ST=$(curl -s -o /dev/null -w '%{http_code}' "$URL/v1/version")
expect_eq "TCP without a token: 401" "$ST" 401
BODY=$(curl -s -H "Authorization: Bearer wrong-token-wrong-token" "$URL/v1/vms")
expect_eq "TCP with a wrong token: 401 api::unauthorized" "$(jq -r .error.code <<<"$BODY")" vm_manager::api::unauthorized
BODY=$(curl -s -H "Authorization: Bearer $TOKEN" "$URL/v1/version")
expect_eq "TCP with the token answers" "$(jq -r .api <<<"$BODY")" v1

api GET /v1/openapi.json
cmp -s "$VMCTL_HOME/body" "$SPEC" && ok "GET /v1/openapi.json is docs/api/openapi.json" || fail "openapi differs"

# --- lifecycle; errors with their status ---
api POST /v1/vms -d '{"name":"job","memory_mib":256,"start":true,"wait":true,"snapshottable":true}'
expect_api "create + start + wait" 201 -
expect_eq "... running" "$(jq -r .state <<<"$BODY")" running
api POST /v1/vms -d '{"name":"job"}'
expect_api "create again" 409 vm_manager::vm::already_exists
api GET /v1/vms/nope
expect_api "status of an unknown VM" 404 vm_manager::vm::not_found
api POST /v1/vms -d '{"name":"x","vcpus":"two"}'
expect_api "a field of the wrong type" 400 vm_manager::api::bad_request
api POST /v1/vms -d '{"name":"bad name!"}'
expect_api "an invalid name" 400 vm_manager::config::invalid
api POST /v1/vms -d '{"name":'
expect_api "malformed JSON" 400 vm_manager::api::bad_request
api POST /v1/vms -H 'Content-Type: application/json' --data-binary @<(head -c 1100000 /dev/zero | tr '\0' ' ')
expect_api "a JSON body over 1 MiB" 413 vm_manager::api::too_large
api GET /v1/nothing
expect_api "an unknown route" 404 vm_manager::api::route_not_found
api GET /v1/vms/job/snapshots
expect_api "snapshots of a VM" 200 -
expect_eq "... none yet" "$(jq -c .snapshots <<<"$BODY")" "[]"
api POST /v1/vms/job/snapshots -d '{"kind":"full"}'
expect_api "a snapshot without a name" 400 vm_manager::api::bad_request
api DELETE /v1/vms/job/snapshots/nope
expect_api "remove an unknown snapshot" 404 vm_manager::snapshot::not_found

# the CLI side by side: one store
expect_eq "the CLI sees the server's VM" "$(state_of job)" running
vm create cli-vm >/dev/null
api GET /v1/vms/cli-vm
expect_api "the server sees the CLI's VM" 200 -
api POST /v1/vms/cli-vm/pause
expect_api "pause a created VM" 409 vm_manager::vm::invalid_state
api POST /v1/vms/cli-vm/start -d '{"wait":true,"timeout":0.001}'
expect_api "start with a wait that cannot be met" 504 vm_manager::timeout
api POST /v1/vms/cli-vm/kill
expect_api "kill it" 200 -
api GET /v1/vms
expect_eq "list holds both" "$(jq -r '[.vms[].name] | sort | join(",")' <<<"$BODY")" cli-vm,job
api GET /v1/vms/job/stats
expect_api "stats" 200 -
expect_eq "... of job" "$(jq -r .name <<<"$BODY")" job
api GET /v1/images
expect_api "images" 200 -
api POST /v1/vms/job/pause
expect_api "pause" 200 -
expect_eq "... paused (the CLI says)" "$(state_of job)" paused
api POST /v1/vms/job/resume
expect_api "resume" 200 -

# --- exec, files, a stalled client, events, routes ---
python3 "$CHECKS" exec "$SOCK" job || fails=$((fails + 1))
mkdir -p "$VMCTL_HOME/files"
python3 "$CHECKS" files "$SOCK" "$VMCTL_HOME/files" job || fails=$((fails + 1))
python3 "$CHECKS" slow "$SOCK" || fails=$((fails + 1))
python3 "$CHECKS" events "$SOCK" "$VMCTL" || fails=$((fails + 1))
vm serve --list-routes >"$VMCTL_HOME/routes"
python3 "$CHECKS" routes "$SOCK" "$VMCTL_HOME/routes" "$SPEC" || fails=$((fails + 1))

# --- snapshots, clones and a warm pool of job ---
pools() { api GET /v1/pools; jq -r '.pools[] | select(.vm == "job" and .snapshot == "pa-base") | "\(.ready)/\(.size)"' <<<"$BODY"; }
api POST /v1/vms/job/snapshots -d '{"name":"pa-base","keep_running":true}'
expect_api "a template snapshot of job" 201 -
expect_eq "... template, of job" "$(jq -r '"\(.kind) \(.vm) \(.name)"' <<<"$BODY")" "template job pa-base"
api POST /v1/vms/job/snapshots -d '{"name":"pa-base"}'
expect_api "the same snapshot again" 409 vm_manager::snapshot::already_exists
api GET /v1/vms/job/snapshots
expect_eq "list: the snapshot, as \`snapshot list --json\`" "$(jq -Sc '.snapshots' <<<"$BODY")" \
  "$(vm snapshot list job --json | jq -Sc .)"
api POST /v1/vms/job/snapshots/pa-base/clone -d '{"name":"pa-c","count":2}'
expect_api "clone count 2" 201 -
expect_eq "... pa-c-1 and pa-c-2, running" "$(jq -r '[.vms[] | .name + "=" + .state] | join(",")' <<<"$BODY")" \
  "pa-c-1=running,pa-c-2=running"
expect_eq "... with their own hostnames" "$(vm exec pa-c-2 -- hostname)" pa-c-2
api POST /v1/vms/job/snapshots/pa-base/clone -d '{"count":2}'
expect_api "clone without a name" 400 vm_manager::api::bad_request
api PUT /v1/vms/job/snapshots/pa-base/pool -d '{}'
expect_api "pool without a size" 400 vm_manager::api::bad_request
api PUT /v1/vms/job/snapshots/pa-base/pool -d '{"size":"one"}'
expect_api "pool with a size of the wrong type" 400 vm_manager::api::bad_request
api PUT /v1/vms/job/snapshots/pa-base/pool -d '{"size":65}'
expect_api "a pool past 64" 400 vm_manager::config::invalid
jq -e '.error.help | length > 0' <<<"$BODY" >/dev/null && ok "... with its help" || fail "no help: $BODY"
api PUT /v1/vms/job/snapshots/nope/pool -d '{"size":1}'
expect_api "a pool of a missing snapshot" 404 vm_manager::snapshot::not_found
api GET /v1/pools
expect_api "pools" 200 -
expect_eq "... none yet" "$(jq -c .pools <<<"$BODY")" "[]"
api PUT /v1/vms/job/snapshots/pa-base/pool -d '{"size":1}'
expect_api "pool of size 1" 200 -
expect_eq "... ready when it answers" "$(jq -r '"\(.vm)/\(.snapshot) \(.ready)/\(.size) \(.members | length)"' <<<"$BODY")" \
  "job/pa-base 1/1 1"
member=$(jq -r '.members[0]' <<<"$BODY")
api GET /v1/pools
expect_eq "GET /v1/pools is \`pool list --json\`" "$(jq -Sc .pools <<<"$BODY")" "$(vm pool list --json | jq -Sc .)"
api DELETE /v1/vms/job/snapshots/pa-base
expect_api "snapshot rm while the pool holds it" 409 vm_manager::snapshot::in_use
mpid=$(vm status --json "$member" | jq -r .pid)
api POST /v1/vms/job/snapshots/pa-base/clone -d '{"name":"pa-p"}'
expect_api "a clone with a pool" 201 -
expect_eq "... runs in the pooled hypervisor" "$(jq -r '.vms[0].pid' <<<"$BODY")" "$mpid"
expect_eq "... its hostname" "$(vm exec pa-p -- hostname)" pa-p
for _ in $(seq 600); do [ "$(pools)" = 1/1 ] && break; sleep 0.1; done
expect_eq "the server's clone refilled the pool" "$(pools)" 1/1
api GET /v1/pools
member=$(jq -r '.pools[0].members[0]' <<<"$BODY")
mpid=$(vm status --json "$member" | jq -r .pid)
api PUT /v1/vms/job/snapshots/pa-base/pool -d '{"size":0}'
expect_api "size 0 removes the pool" 200 -
expect_eq "... the answer is {} (as the CLI's)" "$(jq -c . <<<"$BODY")" "{}"
expect_eq "... no pool left" "$(pools)" ""
for _ in $(seq 100); do kill -0 "$mpid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$mpid" 2>/dev/null && fail "pool hypervisor $mpid still runs" || ok "its hypervisor is gone"
api DELETE /v1/vms/job/snapshots/pa-base/pool
expect_api "DELETE of a pool that is not there" 204 -
for n in pa-c-1 pa-c-2 pa-p; do api DELETE "/v1/vms/$n?force=1"; done
expect_api "destroy the clones" 204 -
api POST /v1/vms/job/stop -d '{"force":true}'
api POST /v1/vms/job/snapshots/nope/restore
expect_api "restore of a missing snapshot" 404 vm_manager::snapshot::not_found
api POST /v1/vms/job/snapshots/pa-base/restore -d '{"timeout":120}'
expect_api "restore job" 200 -
expect_eq "... running again" "$(jq -r .state <<<"$BODY")" running

api DELETE /v1/vms/job
expect_api "destroy a running VM without force" 409 vm_manager::vm::invalid_state
api DELETE '/v1/vms/job?force=1'
expect_api "destroy with force=1" 204 -
api GET /v1/vms/job
expect_api "... gone" 404 vm_manager::vm::not_found
api DELETE /v1/vms/job/snapshots/pa-base
expect_api "its snapshot removed" 204 -

stop_server
[ ! -e "$SOCK" ] && ok "SIGTERM stops it and removes the socket" || fail "socket left behind"

# --- as a daemon ---
out=$(vm serve 2>&1)
expect_eq "the daemon prints where it listens" "$out" "listening on unix:$SOCK"
pid=$(cat "$VMCTL_HOME/serve.pid" 2>/dev/null)
api GET /v1/version
expect_api "the daemon answers" 200 -
[ -n "$pid" ] && kill "$pid"
for _ in $(seq 100); do [ -e "$SOCK" ] || break; sleep 0.1; done
[ ! -e "$SOCK" ] && [ ! -e "$VMCTL_HOME/serve.pid" ] && ok "the daemon stops on SIGTERM, pidfile and socket removed" ||
  fail "daemon left $(ls "$VMCTL_HOME")"
finish
