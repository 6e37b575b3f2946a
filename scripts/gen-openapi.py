import json
E = {"$ref": "#/components/responses/Error"}
def errs(*codes):
    return {str(c): E for c in codes}
def op(summary, ok, *codes, body=None, params=None, desc=None, okdesc="OK", okschema=None, okmedia="application/json"):
    o = {"summary": summary, "responses": {}}
    if desc: o["description"] = desc
    if params: o["parameters"] = params
    if body: o["requestBody"] = body
    r = {"description": okdesc}
    if okschema is not None:
        r["content"] = {okmedia: {"schema": okschema}}
    o["responses"][str(ok)] = r
    o["responses"].update(errs(*codes))
    o["responses"]["default"] = E
    return o
ref = lambda n: {"$ref": "#/components/schemas/" + n}
jbody = lambda n, req=False: {"required": req, "content": {"application/json": {"schema": ref(n)}}}
name = {"$ref": "#/components/parameters/name"}
execid = {"$ref": "#/components/parameters/exec_id"}
vmresp = ref("VM")
paths = {
 "/v1/version": {"get": op("server and library version", 200, okschema=ref("Version"))},
 "/v1/openapi.json": {"get": op("this document", 200, okschema={"type": "object"})},
 "/v1/vms": {
   "get": op("list VMs", 200, okschema=ref("VMList")),
   "post": op("create a VM (and start it with \"start\": true, wait for its agent with \"wait\": true)", 201, 400, 404, 409, 504, body=jbody("VMCreate", True), okdesc="created", okschema=vmresp)},
 "/v1/vms/{name}": {
   "parameters": [name],
   "get": op("status of a VM", 200, 404, okschema=vmresp),
   "delete": op("destroy a VM; a running or paused one only with force=1 (it is killed first)", 204, 404, 409,
       params=[{"name": "force", "in": "query", "schema": {"type": "string", "enum": ["0", "1", "true", "false"]}}], okdesc="destroyed")},
 "/v1/vms/{name}/start": {"parameters": [name], "post": op("start a VM", 200, 404, 409, 504, body=jbody("StartRequest"), okschema=vmresp)},
 "/v1/vms/{name}/stop": {"parameters": [name], "post": op("stop a VM (graceful, then SIGTERM, then SIGKILL)", 200, 404, 409, 504, body=jbody("StopRequest"), okschema=vmresp)},
 "/v1/vms/{name}/kill": {"parameters": [name], "post": op("kill a VM's hypervisor process", 200, 404, 409, okschema=vmresp)},
 "/v1/vms/{name}/pause": {"parameters": [name], "post": op("freeze a running VM's vCPUs", 200, 404, 409, okschema=vmresp)},
 "/v1/vms/{name}/resume": {"parameters": [name], "post": op("unfreeze a paused VM", 200, 404, 409, okschema=vmresp)},
 "/v1/vms/{name}/stats": {"parameters": [name], "get": op("statistics of a VM (the object of `vmctl stats NAME --json`)", 200, 404,
     params=[{"name": "guest", "in": "query", "description": "0: skip the guest agent (cheapest)", "schema": {"type": "string", "enum": ["0", "1"]}}],
     okschema=ref("Stats"))},
 "/v1/vms/{name}/exec": {"parameters": [name], "post": op("run a command; its output streamed as newline-delimited JSON events as it happens", 200, 400, 404, 409,
     body=jbody("ExecRequest", True), okschema=ref("ExecEvent"), okmedia="application/x-ndjson",
     desc="Errors found before the command starts (VM not found, not running, no agent, bad request) come as an HTTP error with the error object. Once the command started, the response is 200 and its body a stream of ExecEvent lines: first {\"event\":\"started\",\"id\":ID}, then {\"stream\":\"stdout\"|\"stderr\",\"data\":BASE64} chunks in the order the guest read them, and last either {\"exit\":N,\"signal\":S} or {\"error\":{...}} (e.g. vm_manager::timeout when timeout expired: the guest killed the command). Closing the connection kills the command.")},
 "/v1/exec/{id}/stdin": {"parameters": [execid], "post": op("write the request body (raw bytes, streamed) to a running command's stdin (started with stdin_open: true, else 400); ?eof=1 closes stdin afterwards", 204, 400, 404,
     params=[{"name": "eof", "in": "query", "schema": {"type": "string", "enum": ["0", "1"]}}],
     body={"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}, okdesc="written")},
 "/v1/exec/{id}/signal": {"parameters": [execid], "post": op("send a signal to a running command's process group", 204, 400, 404, body=jbody("SignalRequest", True), okdesc="sent")},
 "/v1/exec/{id}/resize": {"parameters": [execid], "post": op("resize a TTY command's terminal", 204, 400, 404, 409, body=jbody("ResizeRequest", True), okdesc="resized")},
 "/v1/exec/{id}": {"parameters": [execid], "delete": op("kill a running command (SIGKILL to its process group)", 204, 404, okdesc="killed")},
 "/v1/vms/{name}/files": {"parameters": [name, {"name": "path", "in": "query", "required": True, "description": "absolute path in the guest", "schema": {"type": "string"}}],
   "put": op("upload: the body is the file's content (application/octet-stream), or a tar archive extracted into the directory path (application/x-tar); streamed to disk, never held in memory", 204, 400, 404, 409, 413,
       params=[{"name": "mode", "in": "query", "description": "octal mode of an uploaded single file (default 0644)", "schema": {"type": "string"}}],
       body={"required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}, "application/x-tar": {"schema": {"type": "string", "format": "binary"}}}}, okdesc="uploaded"),
   "get": op("download: a regular file as its bytes; with format=tar (or for a directory) a tar archive of path, streamed", 200, 400, 404, 409,
       params=[{"name": "format", "in": "query", "schema": {"type": "string", "enum": ["raw", "tar"]}}],
       okschema={"type": "string", "format": "binary"}, okmedia="application/octet-stream")},
 "/v1/images": {"get": op("list cached images", 200, okschema=ref("ImageList"))},
 "/v1/events": {"get": op("event stream: one JSON line per VM state change, creation, destruction and exit, as they happen (the store is polled: changes made by the CLI show too)", 200,
     okschema=ref("Event"), okmedia="application/x-ndjson")},
}
snapp = {"name": "snapshot", "in": "path", "required": True, "schema": {"type": "string"}}
paths.update({
 "/v1/vms/{name}/snapshots": {"parameters": [name],
   "get": op("list a VM's snapshots", 200, 404, okschema=ref("SnapshotList")),
   "post": op("snapshot a running VM (template: the clones map its RAM; keep_running: the source continues)", 201, 400, 404, 409, body=jbody("SnapshotCreate", True), okschema=ref("Snapshot"))},
 "/v1/vms/{name}/snapshots/{snapshot}": {"parameters": [name, snapp],
   "delete": op("remove a snapshot (409 snapshot::in_use while VMs map it)", 204, 404, 409, okdesc="removed")},
 "/v1/vms/{name}/snapshots/{snapshot}/restore": {"parameters": [name, snapp],
   "post": op("bring the (not running) VM back to the snapshot and run it; answers once its agent answers", 200, 404, 409, 504, body=jbody("RestoreRequest"), okschema=vmresp)},
 "/v1/vms/{name}/snapshots/{snapshot}/clone": {"parameters": [name, snapp],
   "post": op("new running VMs from a snapshot: name for count 1, else name-1 .. name-N; answers once every one is ready", 201, 400, 404, 409, 504, body=jbody("CloneRequest", True), okschema=vmresp if False else ref("VMList"))},
 "/v1/pools": {"get": op("list warm pools (as `vmctl pool list --json`)", 200, okschema=ref("PoolList"))},
 "/v1/vms/{name}/snapshots/{snapshot}/pool": {"parameters": [name, snapp],
   "put": op("keep size hypervisors ready for a template snapshot (launched before the answer; 0 removes the pool: the answer is then {})", 200, 400, 404, 409, body=jbody("PoolSet", True), okschema=ref("Pool")),
   "delete": op("remove the snapshot's pool and its hypervisors (none: 204 too)", 204, 404, okdesc="removed")},
})
# every op: 401 on TCP without the right token; 400 malformed; 413 too large
for p in paths.values():
    for m, o in p.items():
        if m == "parameters": continue
        o["responses"].setdefault("401", E)
s = {}
s["Error"] = {"type": "object", "required": ["error"], "properties": {"error": {"type": "object",
  "required": ["code", "message", "help", "details", "notes", "context", "errno", "errno_name", "cause"],
  "properties": {
   "code": {"type": "string", "example": "vm_manager::vm::not_found", "description": "stable code (docs/errors.md)"},
   "message": {"type": "string"}, "help": {"type": ["string", "null"]},
   "details": {"type": "object", "additionalProperties": {"type": ["string", "number"]}},
   "notes": {"type": "array", "items": {"type": "string"}},
   "context": {"type": "array", "items": {"type": "string"}},
   "errno": {"type": ["integer", "null"]}, "errno_name": {"type": ["string", "null"]}, "cause": {"type": ["string", "null"]}}}}}
s["Port"] = {"type": "object", "properties": {"host": {"type": "integer"}, "guest": {"type": "integer"}, "protocol": {"type": "string", "enum": ["tcp", "udp"]}}}
s["VM"] = {"type": "object", "description": "the object of `vmctl status NAME --json`", "properties": {
  "name": {"type": "string"}, "state": {"type": "string", "enum": ["created", "running", "paused", "stopped", "crashed"]},
  "backend": {"type": "string"}, "machine": {"type": ["string", "null"]}, "accel": {"type": ["string", "null"]},
  "vcpus": {"type": "integer"}, "memory_mib": {"type": "integer"}, "disk_gib": {"type": ["integer", "null"]},
  "image": {"type": ["string", "null"]}, "pid": {"type": ["integer", "null"]}, "cid": {"type": ["integer", "null"]},
  "ports": {"type": "array", "items": ref("Port")}, "dir": {"type": "string"}, "net": {"type": ["string", "null"]},
  "created_at": {"type": "integer"}, "kernel": {"type": "string"}, "initrd": {"type": "string"}, "cmdline": {"type": "string"},
  "env": {"type": "array", "items": {"type": "string"}}, "paused_by": {"type": "string"}, "pause_cause": {"type": ["string", "null"]},
  "crash_note": {"type": "string"}, "project": {"type": ["string", "null"]}, "provision": {"type": "object"}}}
s["VMList"] = {"type": "object", "properties": {"vms": {"type": "array", "items": ref("VM")}}}
s["VMCreate"] = {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
  "name": {"type": "string"}, "backend": {"type": "string"}, "image": {"type": "string"}, "kernel": {"type": "string"},
  "initrd": {"type": "string"}, "cmdline": {"type": "string"}, "vcpus": {"type": "integer", "minimum": 1},
  "memory_mib": {"type": "integer", "minimum": 1}, "disk_gib": {"type": "integer", "minimum": 1},
  "machine": {"type": "string"}, "accel": {"type": "string", "enum": ["auto", "kvm", "tcg"]},
  "net": {"type": "string", "pattern": "^(user|tap|none|netns:/.+)$", "description": "user, tap, none, or netns:PATH (take over the network namespace at PATH)"},
  "ports": {"type": "array", "items": {"type": "string", "example": "8080:80/tcp"}, "description": "HOST:GUEST[/udp|/tcp], as --port"},
  "env": {"type": "array", "items": {"type": "string", "example": "K=V"}},
  "cloud_init": {"type": "string", "description": "user-data file on the server's host"},
  "ssh_key": {"type": "string", "description": "public key file on the server's host"},
  "snapshottable": {"type": "boolean", "default": False, "description": "its RAM in a file: template snapshots, the clones and pools of which map it (as --snapshottable)"},
  "start": {"type": "boolean", "default": False}, "wait": {"type": "boolean", "default": False, "description": "with start: wait until the guest agent answers"},
  "timeout": {"type": "number", "description": "seconds to wait for the boot (0: the library's default)"}}}
s["StartRequest"] = {"type": "object", "additionalProperties": False, "properties": {"wait": {"type": "boolean", "default": False}, "timeout": {"type": "number"}}}
s["StopRequest"] = {"type": "object", "additionalProperties": False, "properties": {"force": {"type": "boolean", "default": False}, "timeout": {"type": "number", "description": "seconds per step (0: 10)"}}}
s["ExecRequest"] = {"type": "object", "required": ["argv"], "additionalProperties": False, "properties": {
  "argv": {"type": "array", "minItems": 1, "items": {"type": "string"}},
  "env": {"type": "array", "items": {"type": "string"}}, "cwd": {"type": "string"}, "user": {"type": "string"},
  "timeout": {"type": "number", "description": "seconds; 0 or absent: none. On expiry the guest kills the command and the last event is a vm_manager::timeout error"},
  "stdin": {"type": "string", "format": "byte", "description": "base64: the command's whole stdin (then it ends), unless stdin_open"},
  "stdin_open": {"type": "boolean", "default": False, "description": "keep stdin open after `stdin`: feed it with POST /v1/exec/{id}/stdin"},
  "tty": {"type": "boolean", "default": False}, "rows": {"type": "integer"}, "cols": {"type": "integer"}}}
s["ExecEvent"] = {"type": "object", "description": "one line of the exec stream", "properties": {
  "event": {"type": "string", "enum": ["started"]}, "id": {"type": "string"},
  "stream": {"type": "string", "enum": ["stdout", "stderr"]}, "data": {"type": "string", "format": "byte"},
  "exit": {"type": "integer", "description": "exit status, or 128 + signal"}, "signal": {"type": "integer"},
  "error": {"$ref": "#/components/schemas/Error/properties/error"}}}
s["SignalRequest"] = {"type": "object", "required": ["signal"], "properties": {"signal": {"oneOf": [{"type": "integer"}, {"type": "string", "example": "TERM"}]}}}
s["ResizeRequest"] = {"type": "object", "required": ["rows", "cols"], "properties": {"rows": {"type": "integer"}, "cols": {"type": "integer"}}}
s["Image"] = {"type": "object", "properties": {"name": {"type": "string"}, "format": {"type": "string"}, "size": {"type": "integer"},
  "path": {"type": "string"}, "virtual_size": {"type": ["integer", "null"]}, "backing_file": {"type": ["string", "null"]},
  "sha256": {"type": ["string", "null"]}, "source": {"type": ["string", "null"]}, "created_at": {"type": ["integer", "null"]}}}
s["ImageList"] = {"type": "object", "properties": {"images": {"type": "array", "items": ref("Image")}}}
s["Stats"] = {"type": "object", "description": "the object of `vmctl stats NAME --json`: name, state, pid, vcpus, memory_bytes, cpu, memory, uptime, disk, network, guest, guest_network, cgroup (each with available), errors"}
s["Event"] = {"type": "object", "required": ["type", "vm", "time"], "properties": {
  "type": {"type": "string", "enum": ["ready", "created", "state", "exit", "destroyed"]}, "vm": {"type": "string"},
  "from": {"type": ["string", "null"]}, "to": {"type": ["string", "null"]}, "time": {"type": "number", "description": "unix seconds"}}}
s["Snapshot"] = {"type": "object", "properties": {"vm": {"type": "string"}, "name": {"type": "string"}, "kind": {"type": "string", "enum": ["template", "full"]},
  "dir": {"type": "string"}, "qemu_version": {"type": "string"}, "machine": {"type": "string"}, "memory_mib": {"type": "integer"},
  "created_at": {"type": "integer"}, "refs": {"type": "integer", "description": "VMs mapping it"}, "save_ms": {"type": "number", "description": "create only"}}}
s["SnapshotList"] = {"type": "object", "properties": {"snapshots": {"type": "array", "items": ref("Snapshot")}}}
s["SnapshotCreate"] = {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {"name": {"type": "string"}, "kind": {"type": "string", "enum": ["template", "full"]}, "keep_running": {"type": "boolean", "default": False}}}
s["RestoreRequest"] = {"type": "object", "additionalProperties": False, "properties": {"timeout": {"type": "number"}}}
s["CloneRequest"] = {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {"name": {"type": "string"}, "count": {"type": "integer", "minimum": 1, "default": 1}, "timeout": {"type": "number"}}}
s["Pool"] = {"type": "object", "description": "{} when the pool was removed", "properties": {"vm": {"type": "string"}, "snapshot": {"type": "string"},
  "size": {"type": "integer", "description": "how many it keeps"}, "ready": {"type": "integer", "description": "how many are ready now"},
  "members": {"type": "array", "items": {"type": "string"}, "description": "the VM names of its hypervisors (pool-HEX)"},
  "project": {"type": ["string", "null"], "description": "the VMFile whose `vmctl up` set it (from \"VM/SNAP\" pool=N); null: set by hand"}}}
s["PoolList"] = {"type": "object", "properties": {"pools": {"type": "array", "items": ref("Pool")}}}
s["PoolSet"] = {"type": "object", "required": ["size"], "additionalProperties": False, "properties": {"size": {"type": "integer", "minimum": 0, "maximum": 64}}}
s["Version"] = {"type": "object", "properties": {"version": {"type": "string"}, "library": {"type": "string"}, "api": {"type": "string", "example": "v1"}}}
doc = {"openapi": "3.1.0",
 "info": {"title": "vmctl serve", "version": "1", "description": "REST/JSON API of vmctl serve (docs/api.md). Every error is the library's error object with the HTTP status of its code family."},
 "servers": [{"url": "http://localhost"}],
 "security": [{}, {"bearer": []}],
 "paths": paths,
 "components": {"schemas": s,
   "parameters": {"name": {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                  "exec_id": {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}},
   "responses": {"Error": {"description": "an error object", "content": {"application/json": {"schema": ref("Error")}}}},
   "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "TCP only: the token of --token-file"}}}}
print(json.dumps(doc, indent=2))
