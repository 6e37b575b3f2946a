/* SPDX-License-Identifier: MIT */
/* vm_spec <-> JSON (the store's `config` column), and port-forward parsing.
 *
 * JSON form (fields may be added, never renamed):
 *   {"name": "a", "backend": "qemu", "machine": "microvm", "accel": "tcg", "vcpus": 1,
 *    "memory_mib": 256, "disk_gib": 0, "image": "default" | null, "kernel": "/..." | null,
 *    "initrd": ... | null, "cmdline": ... | null, "disk": ... | null, "net": "none",
 *    "ports": [{"host": 8080, "guest": 80, "proto": "tcp"}], "env": ["K=V"], "agent": true,
 *    "allow": ["10.0.0.0/8:443/tcp"], "allow_dns": false, "allow_all": false,
 *    "rate_limit_mbps": 0, "disk_iops": 0, "jail": false, "cpu_quota": 0.5,
 *    "ram_file": "/dev/shm/..." (snapshottable), "nic_mac": "52:54:00:..." (a clone),
 *    "mounts": [{"source": "/h", "target": "/g", "ro": false}], "mount_type": "virtiofs",
 *    "owner": {"pid": 123, "start": 456}}
 * (the last twelve written only when set: absent reads as empty / false / 0; "jail" absent is
 * true)
 * Required: name, backend, machine, accel, vcpus, memory_mib, disk_gib, net, agent. The nullable
 * strings, ports and env may also be absent (read as NULL / empty). */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "arg-check.h"
#include "error.h"
#include "util/util.h"
#include "vm-spec.h"

void vm_spec_free(vm_spec *s)
{
    if (!s)
        return;
    free(s->name);
    free(s->backend);
    free(s->machine);
    free(s->accel);
    free(s->image);
    free(s->kernel);
    free(s->initrd);
    free(s->cmdline);
    free(s->disk);
    free(s->disk_format);
    free(s->base);
    free(s->base_format);
    free(s->disk_layer);
    strv_free(s->disk_chain);
    free(s->seed);
    free(s->ram_file);
    free(s->nic_mac);
    free(s->restore_ram);
    free(s->net);
    free(s->ports);
    strv_free(s->env);
    strv_free(s->allow);
    free(s->mac);
    for (size_t i = 0; i < s->n_mounts; i++) {
        free(s->mounts[i].source);
        free(s->mounts[i].target);
    }
    free(s->mounts);
    free(s->mount_type);
    free(s);
}

/* --- to JSON --- */

static int set_new(json_t *o, const char *key, json_t *v)
{
    if (!v)
        return -ENOMEM;
    return json_object_set_new(o, key, v) < 0 ? -ENOMEM : 0;
}

static int set_str(json_t *o, const char *key, const char *v, bool nullable)
{
    if (!v)
        return nullable ? set_new(o, key, json_null()) : -EINVAL;
    return set_new(o, key, json_string(v));
}

int vm_spec_to_json(const vm_spec *s, char **ret)
{
    if (!s || !ret)
        return -EINVAL;

    json_auto_t *o = json_object();
    if (!o)
        return -ENOMEM;
    int r;
    if ((r = set_str(o, "name", s->name, false)) < 0 ||
        (r = set_str(o, "backend", s->backend, false)) < 0 ||
        (r = set_str(o, "machine", s->machine, false)) < 0 ||
        (r = set_str(o, "accel", s->accel, false)) < 0 ||
        (r = set_new(o, "vcpus", json_integer(s->vcpus))) < 0 ||
        (r = set_new(o, "memory_mib", json_integer(s->memory_mib))) < 0 ||
        (r = set_new(o, "disk_gib", json_integer(s->disk_gib))) < 0 ||
        (r = set_str(o, "image", s->image, true)) < 0 ||
        (r = set_str(o, "kernel", s->kernel, true)) < 0 ||
        (r = set_str(o, "initrd", s->initrd, true)) < 0 ||
        (r = set_str(o, "cmdline", s->cmdline, true)) < 0 ||
        (r = set_str(o, "disk", s->disk, true)) < 0 || (r = set_str(o, "net", s->net, false)) < 0)
        return r;
    /* added with disk images: written only when set, absent means NULL */
    if ((s->disk_format && (r = set_str(o, "disk_format", s->disk_format, true)) < 0) ||
        (s->base && (r = set_str(o, "base", s->base, true)) < 0) ||
        (s->base_format && (r = set_str(o, "base_format", s->base_format, true)) < 0) ||
        (s->disk_layer && (r = set_str(o, "disk_layer", s->disk_layer, true)) < 0) ||
        (s->seed && (r = set_str(o, "seed", s->seed, true)) < 0))
        return r;
    if (s->disk_chain && s->disk_chain[0]) {
        json_t *chain = json_array();
        if ((r = set_new(o, "disk_chain", chain)) < 0)
            return r;
        for (char *const *l = s->disk_chain; *l; l++)
            if (json_array_append_new(chain, json_string(*l)) < 0)
                return -ENOMEM;
    }
    /* added with snapshots: written only when set */
    if ((s->ram_file && (r = set_str(o, "ram_file", s->ram_file, true)) < 0) ||
        (s->nic_mac && (r = set_str(o, "nic_mac", s->nic_mac, true)) < 0))
        return r;

    json_t *ports = json_array();
    if ((r = set_new(o, "ports", ports)) < 0)
        return r;
    for (size_t i = 0; i < s->n_ports; i++) {
        json_t *p =
            json_pack("{s:i, s:i, s:s}", "host", (int)s->ports[i].host_port, "guest",
                      (int)s->ports[i].guest_port, "proto", s->ports[i].udp ? "udp" : "tcp");
        if (!p || json_array_append_new(ports, p) < 0)
            return -ENOMEM;
    }

    json_t *env = json_array();
    if ((r = set_new(o, "env", env)) < 0)
        return r;
    for (char *const *e = s->env; e && *e; e++)
        if (json_array_append_new(env, json_string(*e)) < 0)
            return -ENOMEM;

    if ((r = set_new(o, "agent", json_boolean(s->agent))) < 0)
        return r;
    /* added with the jail: written only when not the default */
    if ((s->no_jail && (r = set_new(o, "jail", json_false())) < 0) ||
        (s->cpu_quota > 0 && (r = set_new(o, "cpu_quota", json_real(s->cpu_quota))) < 0))
        return r;

    /* added with tap networking: written only when set */
    if (s->allow && s->allow[0]) {
        json_t *allow = json_array();
        if ((r = set_new(o, "allow", allow)) < 0)
            return r;
        for (char *const *a = s->allow; *a; a++)
            if (json_array_append_new(allow, json_string(*a)) < 0)
                return -ENOMEM;
    }
    if ((s->allow_dns && (r = set_new(o, "allow_dns", json_true())) < 0) ||
        (s->allow_all && (r = set_new(o, "allow_all", json_true())) < 0) ||
        (s->rate_limit_mbps &&
         (r = set_new(o, "rate_limit_mbps", json_integer(s->rate_limit_mbps))) < 0) ||
        (s->disk_iops && (r = set_new(o, "disk_iops", json_integer(s->disk_iops))) < 0))
        return r;
    /* added with mounts and owners: written only when set */
    if (s->n_mounts) {
        json_t *mounts = json_array();
        if ((r = set_new(o, "mounts", mounts)) < 0)
            return r;
        for (size_t i = 0; i < s->n_mounts; i++) {
            json_t *m = json_pack("{s:s, s:s, s:b}", "source", s->mounts[i].source, "target",
                                  s->mounts[i].target, "ro", s->mounts[i].read_only);
            if (!m || json_array_append_new(mounts, m) < 0)
                return -ENOMEM;
        }
        if ((r = set_str(o, "mount_type", s->mount_type, false)) < 0)
            return r;
    }
    if (s->owner_pid) {
        json_t *owner = json_pack("{s:I, s:I}", "pid", (json_int_t)s->owner_pid, "start",
                                  (json_int_t)s->owner_start);
        if ((r = set_new(o, "owner", owner)) < 0)
            return r;
    }

    char *out = json_dumps(o, JSON_COMPACT);
    if (!out)
        return -ENOMEM;
    *ret = out;
    return 0;
}

/* --- from JSON --- */

static int corrupt_field(vmctl_error **reterr, const char *field, const char *what)
{
    int r = err_make(reterr, VMCTL_E_STORE_CORRUPT, EBADMSG,
                     "stored VM configuration has an invalid field '%s': %s", field, what);
    err_detail(reterr, "field", "%s", field);
    return r;
}

static int get_str(json_t *o, const char *key, bool nullable, char **ret, vmctl_error **reterr)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (!nullable)
            return corrupt_field(reterr, key, "missing");
        *ret = NULL;
        return 0;
    }
    if (!json_is_string(v))
        return corrupt_field(reterr, key, "not a string");
    char *c = strdup(json_string_value(v));
    if (!c)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    *ret = c;
    return 0;
}

static int get_uint(json_t *o, const char *key, json_int_t min, json_int_t max, unsigned *ret,
                    vmctl_error **reterr)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return corrupt_field(reterr, key, "missing");
    if (!json_is_integer(v))
        return corrupt_field(reterr, key, "not an integer");
    json_int_t i = json_integer_value(v);
    if (i < min || i > max)
        return corrupt_field(reterr, key, "out of range");
    *ret = (unsigned)i;
    return 0;
}

static int get_ports(json_t *o, vm_spec *s, vmctl_error **reterr)
{
    json_t *a = json_object_get(o, "ports");
    if (!a || json_is_null(a))
        return 0;
    if (!json_is_array(a))
        return corrupt_field(reterr, "ports", "not an array");
    size_t n = json_array_size(a);
    if (n == 0)
        return 0;
    s->ports = calloc(n, sizeof(*s->ports));
    if (!s->ports)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *p = json_array_get(a, i);
        json_t *host = json_object_get(p, "host");
        json_t *guest = json_object_get(p, "guest");
        json_t *proto = json_object_get(p, "proto");
        if (!json_is_object(p) || !json_is_integer(host) || !json_is_integer(guest) ||
            json_integer_value(host) < 0 || json_integer_value(host) > 65535 ||
            json_integer_value(guest) < 1 || json_integer_value(guest) > 65535 ||
            (proto && !json_is_string(proto)) ||
            (proto && !streq(json_string_value(proto), "tcp") &&
             !streq(json_string_value(proto), "udp")))
            return corrupt_field(reterr, "ports",
                                 "expected {\"host\": 0-65535, \"guest\": 1-65535, "
                                 "\"proto\": \"tcp\"|\"udp\"}");
        s->ports[i] = (vmctl_port_forward){
            .host_port = (uint16_t)json_integer_value(host),
            .guest_port = (uint16_t)json_integer_value(guest),
            .udp = proto && streq(json_string_value(proto), "udp"),
        };
        s->n_ports++;
    }
    return 0;
}

static int get_env(json_t *o, vm_spec *s, vmctl_error **reterr)
{
    json_t *a = json_object_get(o, "env");
    if (!a || json_is_null(a))
        return 0;
    if (!json_is_array(a))
        return corrupt_field(reterr, "env", "not an array");
    size_t n = 0, i;
    json_t *e;
    json_array_foreach(a, i, e)
    {
        const char *kv = json_string_value(e);
        const char *eq = kv ? strchr(kv, '=') : NULL;
        if (!eq || !env_name_is_valid(kv, (size_t)(eq - kv)))
            return corrupt_field(reterr, "env", "expected strings of the form NAME=VALUE");
        if (strv_push(&s->env, &n, kv) < 0)
            return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    }
    return 0;
}

static int get_mounts(json_t *o, vm_spec *s, vmctl_error **reterr)
{
    json_t *a = json_object_get(o, "mounts");
    if (!a || json_is_null(a))
        return 0;
    if (!json_is_array(a))
        return corrupt_field(reterr, "mounts", "not an array");
    size_t n = json_array_size(a);
    if (n == 0)
        return 0;
    s->mounts = calloc(n, sizeof(*s->mounts));
    if (!s->mounts)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(a, i);
        json_t *src = json_object_get(m, "source");
        json_t *dst = json_object_get(m, "target");
        json_t *ro = json_object_get(m, "ro");
        if (!json_is_object(m) || !json_is_string(src) || !json_is_string(dst) ||
            json_string_value(dst)[0] != '/' || (ro && !json_is_boolean(ro)))
            return corrupt_field(reterr, "mounts",
                                 "expected {\"source\": PATH, \"target\": \"/...\", \"ro\": BOOL}");
        s->mounts[i].source = strdup(json_string_value(src));
        s->mounts[i].target = strdup(json_string_value(dst));
        s->mounts[i].read_only = ro && json_is_true(ro);
        s->n_mounts++;
        if (!s->mounts[i].source || !s->mounts[i].target)
            return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    }
    int r = get_str(o, "mount_type", false, &s->mount_type, reterr);
    if (r < 0)
        return r;
    if (!streq(s->mount_type, "virtiofs") && !streq(s->mount_type, "9p"))
        return corrupt_field(reterr, "mount_type", "expected \"virtiofs\" or \"9p\"");
    return 0;
}

static int get_owner(json_t *o, vm_spec *s, vmctl_error **reterr)
{
    json_t *owner = json_object_get(o, "owner");
    if (!owner || json_is_null(owner))
        return 0;
    json_t *pid = json_object_get(owner, "pid"), *start = json_object_get(owner, "start");
    if (!json_is_integer(pid) || !json_is_integer(start) || json_integer_value(pid) < 1 ||
        json_integer_value(pid) > INT_MAX || json_integer_value(start) < 0)
        return corrupt_field(reterr, "owner", "expected {\"pid\": PID, \"start\": TICKS}");
    s->owner_pid = (pid_t)json_integer_value(pid);
    s->owner_start = (uint64_t)json_integer_value(start);
    return 0;
}

int vm_spec_from_json(const char *json, vm_spec **ret, vmctl_error **reterr)
{
    if (!json || !ret)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "vm_spec_from_json: invalid argument");

    json_error_t jerr;
    json_auto_t *o = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
    if (!o) {
        int r = err_make(reterr, VMCTL_E_STORE_CORRUPT, EBADMSG,
                         "stored VM configuration is not valid JSON: %s (line %d, column %d)",
                         jerr.text, jerr.line, jerr.column);
        err_detail(reterr, "field", "config");
        return r;
    }
    if (!json_is_object(o)) {
        int r = err_make(reterr, VMCTL_E_STORE_CORRUPT, EBADMSG,
                         "stored VM configuration is not a JSON object");
        err_detail(reterr, "field", "config");
        return r;
    }

    vm_spec *s = calloc(1, sizeof(*s));
    if (!s)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    cleanup_vm_spec vm_spec *owned = s;

    int r;
    if ((r = get_str(o, "name", false, &s->name, reterr)) < 0)
        return r;
    if (!name_is_valid(s->name))
        return corrupt_field(reterr, "name", "not a valid VM name");
    if ((r = get_str(o, "backend", false, &s->backend, reterr)) < 0 ||
        (r = get_str(o, "machine", false, &s->machine, reterr)) < 0 ||
        (r = get_str(o, "accel", false, &s->accel, reterr)) < 0 ||
        (r = get_uint(o, "vcpus", 1, UINT_MAX, &s->vcpus, reterr)) < 0 ||
        (r = get_uint(o, "memory_mib", 1, UINT_MAX, &s->memory_mib, reterr)) < 0 ||
        (r = get_uint(o, "disk_gib", 0, UINT_MAX, &s->disk_gib, reterr)) < 0 ||
        (r = get_str(o, "image", true, &s->image, reterr)) < 0 ||
        (r = get_str(o, "kernel", true, &s->kernel, reterr)) < 0 ||
        (r = get_str(o, "initrd", true, &s->initrd, reterr)) < 0 ||
        (r = get_str(o, "cmdline", true, &s->cmdline, reterr)) < 0 ||
        (r = get_str(o, "disk", true, &s->disk, reterr)) < 0 ||
        (r = get_str(o, "disk_format", true, &s->disk_format, reterr)) < 0 ||
        (r = get_str(o, "base", true, &s->base, reterr)) < 0 ||
        (r = get_str(o, "base_format", true, &s->base_format, reterr)) < 0 ||
        (r = get_str(o, "disk_layer", true, &s->disk_layer, reterr)) < 0 ||
        (r = get_str(o, "seed", true, &s->seed, reterr)) < 0 ||
        (r = get_str(o, "ram_file", true, &s->ram_file, reterr)) < 0 ||
        (r = get_str(o, "nic_mac", true, &s->nic_mac, reterr)) < 0 ||
        (r = get_str(o, "net", false, &s->net, reterr)) < 0 || (r = get_ports(o, s, reterr)) < 0 ||
        (r = get_env(o, s, reterr)) < 0 || (r = get_mounts(o, s, reterr)) < 0 ||
        (r = get_owner(o, s, reterr)) < 0)
        return r;

    json_t *chain = json_object_get(o, "disk_chain");
    if (chain && !json_is_null(chain)) {
        size_t n = 0, i;
        json_t *e;
        if (!json_is_array(chain))
            return corrupt_field(reterr, "disk_chain", "not an array");
        json_array_foreach(chain, i, e)
        {
            if (!json_is_string(e))
                return corrupt_field(reterr, "disk_chain", "expected strings");
            if (strv_push(&s->disk_chain, &n, json_string_value(e)) < 0)
                return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
        }
    }
    json_t *allow = json_object_get(o, "allow");
    if (allow && !json_is_null(allow)) {
        size_t n = 0, i;
        json_t *e;
        if (!json_is_array(allow))
            return corrupt_field(reterr, "allow", "not an array");
        json_array_foreach(allow, i, e)
        {
            if (!json_is_string(e))
                return corrupt_field(reterr, "allow", "expected strings");
            if (strv_push(&s->allow, &n, json_string_value(e)) < 0)
                return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
        }
    }
    static const char *const flags[] = {"allow_dns", "allow_all"};
    for (size_t i = 0; i < ELEMENTSOF(flags); i++) {
        json_t *b = json_object_get(o, flags[i]);
        if (b && !json_is_boolean(b))
            return corrupt_field(reterr, flags[i], "not a boolean");
        *(i ? &s->allow_all : &s->allow_dns) = json_is_true(b);
    }
    if ((json_object_get(o, "rate_limit_mbps") &&
         (r = get_uint(o, "rate_limit_mbps", 0, UINT32_MAX, &s->rate_limit_mbps, reterr)) < 0) ||
        (json_object_get(o, "disk_iops") &&
         (r = get_uint(o, "disk_iops", 0, UINT32_MAX, &s->disk_iops, reterr)) < 0))
        return r;

    json_t *agent = json_object_get(o, "agent");
    if (!json_is_boolean(agent))
        return corrupt_field(reterr, "agent", agent ? "not a boolean" : "missing");
    s->agent = json_is_true(agent);
    json_t *jail = json_object_get(o, "jail");
    if (jail && !json_is_boolean(jail))
        return corrupt_field(reterr, "jail", "not a boolean");
    s->no_jail = jail && json_is_false(jail);
    json_t *quota = json_object_get(o, "cpu_quota");
    if (quota && (!json_is_number(quota) || json_number_value(quota) < 0))
        return corrupt_field(reterr, "cpu_quota", "not a non-negative number");
    s->cpu_quota = quota ? json_number_value(quota) : 0;

    *ret = TAKE_PTR(owned);
    return 0;
}

/* --- "SRC:DST[:ro|:rw]" --- */

int vmctl_mount_parse(char *s, vmctl_mount *ret, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(s, reterr);
    VMCTL_ARG_CHECK(ret, reterr);
    static const char allowed[] = "SRC:DST[:ro] with SRC a host directory and DST an absolute "
                                  "guest path";
    char *colon = strchr(s, ':');
    if (!colon || colon == s)
        return err_invalid_field(reterr, "mount", s, allowed,
                                 "invalid mount '%s': expected SRC:DST[:ro]", s);
    char *dst = colon + 1;
    char *opt = strchr(dst, ':');
    bool ro = false;
    if (opt) {
        if (!streq(opt + 1, "ro") && !streq(opt + 1, "rw"))
            return err_invalid_field(reterr, "mount", s, allowed,
                                     "invalid mount '%s': the option must be 'ro' or 'rw'", s);
        ro = streq(opt + 1, "ro");
        *opt = '\0';
    }
    *colon = '\0';
    *ret = (vmctl_mount){.source = s, .target = dst, .read_only = ro};
    return 0;
}

/* --- "HOST:GUEST[/udp|/tcp]" --- */

/* 1-5 decimal digits, nothing else; -1 when not a port number. */
static long parse_port(const char *s, size_t len)
{
    if (len == 0 || len > 5)
        return -1;
    long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v > 65535 ? -1 : v;
}

static int port_invalid(vmctl_error **reterr, const char *s, const char *why)
{
    return err_invalid_field(
        reterr, "port", s ? s : "",
        "HOST:GUEST[/tcp|/udp] with GUEST 1-65535 and HOST 0-65535 (0 picks a free port)",
        "invalid port forward '%s': %s", s ? s : "", why);
}

int vmctl_port_forward_parse(const char *s, vmctl_port_forward *ret, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(s, reterr); /* ret NULL: only check s */
    if (!s || !*s)
        return port_invalid(reterr, s, "empty");

    const char *colon = strchr(s, ':');
    if (!colon)
        return port_invalid(reterr, s, "expected HOST:GUEST");
    const char *guest = colon + 1;
    const char *slash = strchr(guest, '/');
    size_t guest_len = slash ? (size_t)(slash - guest) : strlen(guest);

    bool udp = false;
    if (slash) {
        if (streq(slash + 1, "udp"))
            udp = true;
        else if (!streq(slash + 1, "tcp"))
            return port_invalid(reterr, s, "the protocol must be 'tcp' or 'udp'");
    }

    long h = parse_port(s, (size_t)(colon - s));
    if (h < 0)
        return port_invalid(reterr, s, "the host port must be a number from 0 to 65535");
    long g = parse_port(guest, guest_len);
    if (g < 1)
        return port_invalid(reterr, s, "the guest port must be a number from 1 to 65535");

    if (ret)
        *ret =
            (vmctl_port_forward){.host_port = (uint16_t)h, .guest_port = (uint16_t)g, .udp = udp};
    return 0;
}
