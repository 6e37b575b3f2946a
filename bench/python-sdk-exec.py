#!/usr/bin/env python3
"""bench/python-sdk-exec.py VMCTL IMAGES [N]: exec `true` in one VM N times (default 30) each
way, interleaved so every way sees the same load: through the Python SDK (vm.exec), through the
CLI (`vmctl exec NAME true`, a process per call), through the server directly with curl on the
unix socket (a process per call, as the CLI) and with a bare http.client request in this process
(the server's own cost: the SDK's floor). Prints the medians and their ratios to the bare
request's. One server (started on demand by the SDK)
and one VM in a temporary home whose images/ is IMAGES; both are gone at the end."""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import vmctl  # noqa: E402
from vmctl._http import UnixHTTPConnection  # noqa: E402


def main() -> int:
    vmctl_bin, images = os.path.abspath(sys.argv[1]), sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    home = tempfile.mkdtemp(prefix="vmctl-bench-sdk.")
    os.symlink(os.path.abspath(images), os.path.join(home, "images"))
    os.environ["VMCTL"] = vmctl_bin
    client = vmctl.Client(home=home, start_timeout=60)
    sock = os.path.join(home, "serve.sock")
    curl = ["curl", "-sf", "--unix-socket", sock, "-X", "POST", "http://x/v1/vms/bench/exec",
            "-d", '{"argv": ["true"]}']
    cli = [vmctl_bin, "--home", home, "exec", "bench", "true"]
    times: dict[str, list[float]] = {"sdk": [], "cli": [], "curl": [], "http": []}
    try:
        with vmctl.VM.create("bench", vcpus=1, memory_mib=256, client=client, timeout=120) as vm:
            vm.exec(["true"], check=True)  # warm
            for _ in range(n):
                t = time.perf_counter()
                vm.exec(["true"], check=True)
                times["sdk"].append(time.perf_counter() - t)
                t = time.perf_counter()
                subprocess.run(cli, check=True)
                times["cli"].append(time.perf_counter() - t)
                t = time.perf_counter()
                out = subprocess.run(curl, check=True, capture_output=True).stdout
                times["curl"].append(time.perf_counter() - t)
                assert b'"exit":0' in out.replace(b" ", b""), out
                t = time.perf_counter()
                conn = UnixHTTPConnection(sock)
                conn.request("POST", "/v1/vms/bench/exec", body=b'{"argv": ["true"]}',
                             headers={"Content-Type": "application/json"})
                out = conn.getresponse().read()
                conn.close()
                times["http"].append(time.perf_counter() - t)
                assert b'"exit":0' in out.replace(b" ", b""), out
    finally:
        client.stop_server()
        shutil.rmtree(home, ignore_errors=True)
    base = statistics.median(times["http"])
    print(f"exec `true`, {n} runs each, interleaved (median, ratio to a bare http.client request)")
    for k in ("http", "sdk", "curl", "cli"):
        m = statistics.median(times[k])
        print(f"  {k:5} {m * 1e3:8.2f} ms  {m / base:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
