#!/bin/bash
# bench/serve.sh [N]: vmctl serve against the library and the CLI, in one run (docs/benchmarks.md):
# exec `true` through the server vs vmctl_exec() in one process (bench/serve-exec.c); 1,000
# status requests from 8 concurrent clients vs 1,000 `vmctl status --json` from 8 workers; the
# RSS of an idle server. Needs a build (BUILD, default ./build) and the default guest
# (VMCTL_TEST_IMAGES, default /work/images).
set -euo pipefail
N=${1:-100}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
VMCTL=$BUILD/src/cli/vmctl
export VMCTL_HOME
VMCTL_HOME=$(mktemp -d /tmp/vmctl-bench-serve.XXXXXX)
ln -s "${VMCTL_TEST_IMAGES:-/work/images}" "$VMCTL_HOME/images"
SERVE_PID=
cleanup() {
  [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null
  "$VMCTL" destroy --force b >/dev/null 2>&1 || true
  rm -rf "$VMCTL_HOME"
}
trap cleanup EXIT
cc -O2 -o "$VMCTL_HOME/serve-exec" "$ROOT/bench/serve-exec.c" -I"$ROOT/include" -I"$BUILD/include" \
  -L"$BUILD/src/lib" -lvmctl -Wl,-rpath,"$BUILD/src/lib"
"$VMCTL" run b >/dev/null
"$VMCTL" serve --foreground 2>"$VMCTL_HOME/serve.err" &
SERVE_PID=$!
for _ in $(seq 100); do [ -S "$VMCTL_HOME/serve.sock" ] && break; sleep 0.1; done
sleep 0.5
echo "idle server: $(awk '/VmRSS/ {print $2, $3}' /proc/$SERVE_PID/status) RSS"
"$VMCTL_HOME/serve-exec" b "$VMCTL_HOME/serve.sock" "$N"
python3 - "$VMCTL_HOME/serve.sock" <<'PY'
import http.client, socket, sys, threading, time
sock = sys.argv[1]
class C(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect(sock)
def worker(n, errs):
    c = C("x")
    for _ in range(n):
        c.request("GET", "/v1/vms/b"); r = c.getresponse(); r.read()
        if r.status != 200: errs.append(r.status)
errs = []
t0 = time.monotonic()
ts = [threading.Thread(target=worker, args=(125, errs)) for _ in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
dt = time.monotonic() - t0
print("1000 GET /v1/vms/b, 8 clients (keep-alive): %.2f s, %.0f requests/s%s" % (dt, 1000 / dt, " errors %s" % errs[:3] if errs else ""))
PY
t0=$(date +%s.%N)
seq 1000 | xargs -P8 -n125 sh -c 'for i in "$@"; do "'"$VMCTL"'" status --json b >/dev/null; done' _
t1=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" 'BEGIN { printf "1000 vmctl status --json b, 8 workers: %.2f s, %.0f per s\n", b - a, 1000 / (b - a) }'
echo "server after the run: $(awk '/VmRSS/ {print $2, $3}' /proc/$SERVE_PID/status) RSS"
