/* SPDX-License-Identifier: MIT */
/* VMFile.kdl: schema mapping and validation (docs/vmfile.md). */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vmctl/snapshot.h> /* VMCTL_POOL_MAX */

#include "arg-check.h"
#include "error.h"
#include "kdl.h"
#include "firewall.h"
#include "vm-spec.h" /* VM_MAX_MOUNTS */
#include "util/util.h"
#include "podnet.h"
#include "vmfile.h"

#define VMFILE_NAME "VMFile.kdl"

static void step_clear(vmfile_step *s)
{
    free(s->inline_cmd);
    free(s->script);
    free(s->user);
    free(s->source);
    free(s->destination);
}

static void machine_clear(vmfile_machine *m)
{
    free(m->name);
    free(m->image);
    free(m->kernel);
    free(m->initrd);
    free(m->cmdline);
    free(m->machine);
    free(m->accel);
    free(m->net);
    free(m->image_url);
    free(m->image_sha256);
    free(m->image_name);
    free(m->cloud_init);
    free(m->ssh_key);
    free(m->ssh_user);
    free(m->from_vm);
    free(m->from_snap);
    free(m->ports);
    strv_free(m->env);
    strv_free(m->allow);
    for (size_t i = 0; i < m->n_mounts; i++) {
        free((char *)m->mounts[i].source);
        free((char *)m->mounts[i].target);
    }
    free(m->mounts);
    for (size_t i = 0; i < m->n_steps; i++)
        step_clear(&m->steps[i]);
    free(m->steps);
}

void vmfile_free(vmfile *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n_machines; i++)
        machine_clear(&f->machines[i]);
    free(f->machines);
    free(f->path);
    free(f->project);
    free(f->dir);
    free(f);
}

const vmfile_machine *vmfile_find(const vmfile *f, const char *name)
{
    for (size_t i = 0; f && i < f->n_machines; i++)
        if (streq(f->machines[i].name, name))
            return &f->machines[i];
    return NULL;
}

const char *vmfile_step_kind_to_string(vmfile_step_kind k)
{
    return k == VMFILE_STEP_FILE ? "file" : "shell";
}

/* --- validation helpers --- */

typedef struct checker {
    const kdl_document *doc;
    const char *dir;
    const char *vm; /* the vm node's name, for messages (NULL at the top level) */
    vmctl_error **reterr;
    kdl_line_cursor lines; /* steps' line numbers in one pass over the source */
} checker;

/* A positioned validation error: "vm "web": <message>", details node and field. */
static int verr(checker *c, size_t offset, const char *label, const char *node, const char *field,
                const char *help, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static int verr(checker *c, size_t offset, const char *label, const char *node, const char *field,
                const char *help, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cleanup_free char *msg = str_vprintf(fmt, ap);
    va_end(ap);
    int r;
    if (c->vm)
        r = kdl_error_at(c->doc, c->reterr, VMCTL_E_VMFILE_VALIDATION, offset, label,
                         "vm \"%s\": %s", c->vm, msg ? msg : "invalid");
    else
        r = kdl_error_at(c->doc, c->reterr, VMCTL_E_VMFILE_VALIDATION, offset, label, "%s",
                         msg ? msg : "invalid");
    if (c->vm)
        err_detail(c->reterr, "vm", "%s", c->vm);
    err_detail(c->reterr, "node", "%s", node);
    if (field)
        err_detail(c->reterr, "field", "%s", field);
    err_help(c->reterr, "%s", help ? help : "See docs/vmfile.md for the VMFile.kdl schema");
    return r;
}

/* Past one of the caps of vmfile.h: at the first node over it, details limit and count. */
static int cap_err(checker *c, size_t offset, const char *node, const char *what, size_t count,
                   unsigned limit, const char *per)
{
    int r = verr(c, offset, "over the limit", node, NULL,
                 "Split the machines over several VMFiles, or fold steps into scripts "
                 "(docs/vmfile.md, Limits)",
                 "too many %s: %zu (at most %u %s)", what, count, limit, per);
    err_detail_num(c->reterr, "limit", limit);
    err_detail_num(c->reterr, "count", (double)count);
    return r;
}

static const char *value_type_name(const kdl_value *v)
{
    switch (v->type) {
    case KDL_VALUE_STRING:
        return "a string";
    case KDL_VALUE_NUMBER:
        return "a number";
    case KDL_VALUE_BOOL:
        return "a boolean";
    default:
        return "null";
    }
}

static bool str_ok(const kdl_str *s)
{
    return strlen(s->data) == s->len;
}

/* The node has exactly one argument, no properties (except those in allowed_props, NULL-ended)
 * and no children (unless allow_children). */
static int check_shape(checker *c, const kdl_node *n, const char *field, const char *what,
                       const char *const *allowed_props, bool allow_children)
{
    if (n->n_args != 1)
        return verr(c, n->n_args > 1 ? n->args[1].offset : n->offset,
                    n->n_args > 1 ? "extra value" : "value missing", field, field, NULL,
                    "'%s' takes exactly one value: %s", field, what);
    for (size_t i = 0; i < n->n_props; i++) {
        bool ok = false;
        for (size_t j = 0; allowed_props && allowed_props[j]; j++)
            if (streq(allowed_props[j], n->props[i].key.data))
                ok = true;
        if (!ok)
            return verr(c, n->props[i].offset, "unknown property", field, n->props[i].key.data,
                        NULL, "'%s' has no property '%s'", field, n->props[i].key.data);
    }
    if (n->n_children && !allow_children)
        return verr(c, n->children[0].offset, "unexpected child", field, field, NULL,
                    "'%s' takes no children block", field);
    return 0;
}

static int get_string(checker *c, const kdl_node *n, const char *field, const char *what,
                      const char *const *props, char **ret)
{
    int r = check_shape(c, n, field, what, props, false);
    if (r < 0)
        return r;
    const kdl_value *v = &n->args[0];
    if (v->type != KDL_VALUE_STRING || !str_ok(&v->string) || v->string.len == 0)
        return verr(c, v->offset, "expected a string", field, field, NULL,
                    "'%s' must be %s, not %s", field, what,
                    v->type == KDL_VALUE_STRING ? "an empty string or one with a NUL"
                                                : value_type_name(v));
    *ret = strdup(v->string.data);
    return *ret ? 0 : -ENOMEM;
}

static int get_uint(checker *c, const kdl_node *n, const char *field, const char *what,
                    unsigned min, unsigned max, unsigned *ret)
{
    int r = check_shape(c, n, field, what, NULL, false);
    if (r < 0)
        return r;
    const kdl_value *v = &n->args[0];
    if (v->type != KDL_VALUE_NUMBER || v->number.kind != KDL_NUMBER_INTEGER ||
        !v->number.is_int64 || v->number.i64 < (int64_t)min || v->number.i64 > (int64_t)max)
        return verr(
            c, v->offset, v->type == KDL_VALUE_NUMBER ? "out of range" : "expected a number", field,
            field, NULL, "'%s' must be %s (an integer from %u to %u)", field, what, min, max);
    *ret = (unsigned)v->number.i64;
    return 0;
}

static char *expand_path(const char *dir, const char *s)
{
    if (s[0] == '~' && (s[1] == '/' || s[1] == '\0')) {
        const char *home = getenv("HOME");
        return str_printf("%s%s", home && *home ? home : "/", s + 1);
    }
    if (s[0] == '/')
        return strdup(s);
    while (s[0] == '.' && s[1] == '/')
        for (s += 2; *s == '/'; s++)
            ;
    return str_printf("%s/%s", dir, *s ? s : ".");
}

/* A path value: resolved against the file's directory, must be a readable file. */
static int get_path(checker *c, const kdl_node *n, const char *field, const char *what, char **ret)
{
    cleanup_free char *s = NULL;
    int r = get_string(c, n, field, what, NULL, &s);
    if (r < 0)
        return r;
    cleanup_free char *p = expand_path(c->dir, s);
    if (!p)
        return -ENOMEM;
    if (access(p, R_OK) < 0) {
        int e = errno;
        verr(c, n->args[0].offset, "not found", field, field, NULL,
             "'%s' names '%s', which does not exist or is not readable", field, p);
        return err_cause(c->reterr, e);
    }
    char *real = realpath(p, NULL);
    *ret = real ? real : TAKE_PTR(p);
    return 0;
}

static int set_once(checker *c, const kdl_node *n, const char *field, const kdl_node **seen)
{
    if (*seen)
        return verr(c, n->offset, "given again", field, field, NULL,
                    "'%s' may appear only once per vm", field);
    *seen = n;
    return 0;
}

static int one_of(checker *c, const kdl_node *n, const char *field, const char *const *allowed,
                  char **ret)
{
    cleanup_free char *list = NULL;
    for (size_t i = 0; allowed[i]; i++) {
        char *l = str_printf("%s%s\"%s\"", list ? list : "", list ? ", " : "", allowed[i]);
        free(list);
        list = l;
        if (!list)
            return -ENOMEM;
    }
    cleanup_free char *what = str_printf("one of %s", list);
    cleanup_free char *s = NULL;
    int r = get_string(c, n, field, what ? what : "a string", NULL, &s);
    if (r < 0)
        return r;
    for (size_t i = 0; allowed[i]; i++)
        if (streq(allowed[i], s)) {
            *ret = TAKE_PTR(s);
            return 0;
        }
    return verr(c, n->args[0].offset, "not allowed", field, field, NULL,
                "'%s' must be %s, not \"%s\"", field, what, s);
}

/* --- the fields of a vm node --- */

static int parse_memory(checker *c, const kdl_node *n, unsigned *ret)
{
    static const char what[] = "a number of MiB (at least 32) or a string like \"512M\" or \"2G\"";
    int r = check_shape(c, n, "memory", what, NULL, false);
    if (r < 0)
        return r;
    const kdl_value *v = &n->args[0];
    unsigned long long mib = 0;
    bool ok = false;
    if (v->type == KDL_VALUE_NUMBER && v->number.kind == KDL_NUMBER_INTEGER && v->number.is_int64 &&
        v->number.i64 >= 0) {
        mib = (unsigned long long)v->number.i64;
        ok = true;
    } else if (v->type == KDL_VALUE_STRING && str_ok(&v->string)) {
        char *end = NULL;
        errno = 0;
        unsigned long long x = strtoull(v->string.data, &end, 10);
        if (errno == 0 && end != v->string.data && v->string.data[0] != '-') {
            if (streq(end, "") || streq(end, "M") || streq(end, "MiB") || streq(end, "m")) {
                mib = x;
                ok = true;
            } else if (streq(end, "G") || streq(end, "GiB") || streq(end, "g")) {
                mib = x * 1024;
                ok = x < (1ULL << 40);
            }
        }
    }
    if (!ok)
        return verr(c, v->offset, "not a size", "memory", "memory", NULL, "'memory' must be %s",
                    what);
    if (mib < 32 || mib > UINT_MAX)
        return verr(c, v->offset, mib < 32 ? "too small" : "too large", "memory", "memory", NULL,
                    mib < 32 ? "'memory' must be at least 32 MiB, not %llu MiB"
                             : "'memory' of %llu MiB is too large",
                    mib);
    *ret = (unsigned)mib;
    return 0;
}

static int parse_port(checker *c, const kdl_node *n, vmfile_machine *m, size_t *n_ports)
{
    static const char what[] = "\"HOST:GUEST[/udp]\", or host=N guest=N [udp=#true]";
    vmctl_port_forward p = {};
    if (n->n_args == 1 && n->n_props == 0 && n->n_children == 0) {
        const kdl_value *v = &n->args[0];
        if (v->type != KDL_VALUE_STRING || !str_ok(&v->string))
            return verr(c, v->offset, "expected a string", "port", "port", NULL,
                        "'port' must be %s, not %s", what, value_type_name(v));
        vmctl_error *pe = NULL;
        if (vmctl_port_forward_parse(v->string.data, &p, &pe) < 0) {
            int r = verr(c, v->offset, "invalid port forward", "port", "port", NULL,
                         "'port' \"%s\" is invalid (%s): it must be %s", v->string.data,
                         pe ? vmctl_error_get_message(pe) : "?", what);
            vmctl_error_free(pe);
            return r;
        }
    } else if (n->n_args == 0 && n->n_children == 0 && n->n_props > 0) {
        bool have_host = false, have_guest = false;
        for (size_t i = 0; i < n->n_props; i++) {
            const kdl_prop *pr = &n->props[i];
            const kdl_value *v = &pr->value;
            const char *k = pr->key.data;
            if (streq(k, "udp")) {
                if (v->type != KDL_VALUE_BOOL)
                    return verr(c, v->offset, "expected #true or #false", "port", "udp", NULL,
                                "'port' property 'udp' must be #true or #false");
                p.udp = v->boolean;
            } else if (streq(k, "host") || streq(k, "guest")) {
                bool guest = streq(k, "guest");
                if (v->type != KDL_VALUE_NUMBER || v->number.kind != KDL_NUMBER_INTEGER ||
                    !v->number.is_int64 || v->number.i64 < (guest ? 1 : 0) || v->number.i64 > 65535)
                    return verr(c, v->offset, "not a port", "port", k, NULL,
                                "'port' property '%s' must be a port number (%s to 65535)", k,
                                guest ? "1" : "0");
                if (guest) {
                    p.guest_port = (uint16_t)v->number.i64;
                    have_guest = true;
                } else {
                    p.host_port = (uint16_t)v->number.i64;
                    have_host = true;
                }
            } else {
                return verr(c, pr->offset, "unknown property", "port", k, NULL,
                            "'port' has no property '%s': it must be %s", k, what);
            }
        }
        if (!have_host || !have_guest)
            return verr(c, n->offset, have_host ? "guest missing" : "host missing", "port",
                        have_host ? "guest" : "host", NULL,
                        "'port' needs both host= and guest=: %s", what);
    } else {
        return verr(c, n->offset, "invalid port", "port", "port", NULL, "'port' must be %s", what);
    }
    /* m->ports has room for every port node of the vm (parse_vm) */
    m->ports[(*n_ports)++] = p;
    return 0;
}

static int push_env(checker *c, vmfile_machine *m, size_t offset, const char *k, size_t klen,
                    const char *v)
{
    if (!env_name_is_valid(k, klen))
        return verr(c, offset, "invalid name", "env", "env", NULL,
                    "'env' variable name '%.*s' is invalid: names match [A-Za-z_][A-Za-z0-9_]*",
                    (int)klen, k);
    return strv_pushf(&m->env, &m->n_env, "%.*s=%s", (int)klen, k, v);
}

static int parse_env(checker *c, const kdl_node *n, vmfile_machine *m)
{
    static const char what[] = "properties K=\"V\" or arguments \"K=V\"";
    if (n->n_children || (n->n_args == 0 && n->n_props == 0))
        return verr(c, n->offset, "invalid env", "env", "env", NULL, "'env' takes %s", what);
    if (n->n_args + n->n_props > VMFILE_MAX_ENV)
        return cap_err(c,
                       n->n_args > VMFILE_MAX_ENV ? n->args[VMFILE_MAX_ENV].offset
                                                  : n->props[VMFILE_MAX_ENV - n->n_args].offset,
                       "env", "env variables", n->n_args + n->n_props, VMFILE_MAX_ENV, "per vm");
    for (size_t i = 0; i < n->n_args; i++) {
        const kdl_value *v = &n->args[i];
        const char *eq = v->type == KDL_VALUE_STRING ? strchr(v->string.data, '=') : NULL;
        if (!eq || !str_ok(&v->string))
            return verr(c, v->offset, "expected \"K=V\"", "env", "env", NULL,
                        "'env' takes %s; this argument is not \"K=V\"", what);
        int r = push_env(c, m, v->offset, v->string.data, (size_t)(eq - v->string.data), eq + 1);
        if (r < 0)
            return r;
    }
    for (size_t i = 0; i < n->n_props; i++) {
        const kdl_prop *p = &n->props[i];
        const kdl_value *v = &p->value;
        const char *val;
        if (v->type == KDL_VALUE_STRING && str_ok(&v->string))
            val = v->string.data;
        else if (v->type == KDL_VALUE_NUMBER)
            val = v->number.text.data;
        else if (v->type == KDL_VALUE_BOOL)
            val = v->boolean ? "true" : "false";
        else
            return verr(c, v->offset, "expected a string", "env", p->key.data, NULL,
                        "'env' value of '%s' must be a string or a number", p->key.data);
        int r = push_env(c, m, p->offset, p->key.data, p->key.len, val);
        if (r < 0)
            return r;
    }
    return 0;
}

static int parse_block(checker *c, const kdl_node *n, const char *field, const char *allowed)
{
    if (n->n_args || n->n_props)
        return verr(c, n->n_args ? n->args[0].offset : n->props[0].offset, "unexpected value",
                    field, field, NULL, "'%s' takes no values, only a children block { %s }", field,
                    allowed);
    return 0;
}

static int parse_cloud_init(checker *c, const kdl_node *n, vmfile_machine *m)
{
    int r = parse_block(c, n, "cloud-init", "user-data PATH");
    if (r < 0)
        return r;
    for (size_t i = 0; i < n->n_children; i++) {
        const kdl_node *ch = &n->children[i];
        if (!streq(ch->name.data, "user-data"))
            return verr(c, ch->offset, "unknown field", "cloud-init", ch->name.data, NULL,
                        "'cloud-init' has no field '%s': allowed is user-data", ch->name.data);
        if (m->cloud_init)
            return verr(c, ch->offset, "given again", "cloud-init", "user-data", NULL,
                        "'user-data' may appear only once");
        r = get_path(c, ch, "user-data", "the path of a cloud-init user-data file", &m->cloud_init);
        if (r < 0)
            return r;
    }
    if (!m->cloud_init)
        return verr(c, n->offset, "user-data missing", "cloud-init", "user-data", NULL,
                    "'cloud-init' needs user-data PATH");
    return 0;
}

static int parse_ssh(checker *c, const kdl_node *n, vmfile_machine *m)
{
    int r = parse_block(c, n, "ssh", "key PATH; user NAME");
    if (r < 0)
        return r;
    for (size_t i = 0; i < n->n_children; i++) {
        const kdl_node *ch = &n->children[i];
        const char *f = ch->name.data;
        char **slot = streq(f, "key") ? &m->ssh_key : streq(f, "user") ? &m->ssh_user : NULL;
        if (!slot)
            return verr(c, ch->offset, "unknown field", "ssh", f, NULL,
                        "'ssh' has no field '%s': allowed are key, user", f);
        if (*slot)
            return verr(c, ch->offset, "given again", "ssh", f, NULL,
                        "'%s' may appear only once in 'ssh'", f);
        r = slot == &m->ssh_key ? get_path(c, ch, "key", "the path of a public key file", slot)
                                : get_string(c, ch, "user", "a user name", NULL, slot);
        if (r < 0)
            return r;
    }
    return 0;
}

static int parse_timeout(checker *c, const kdl_node *n, double *ret)
{
    int r = check_shape(c, n, "timeout", "a number of seconds", NULL, false);
    if (r < 0)
        return r;
    const kdl_value *v = &n->args[0];
    if (v->type != KDL_VALUE_NUMBER || !(v->number.value > 0) || v->number.value > 1e7)
        return verr(c, v->offset, "expected seconds", "timeout", "timeout", NULL,
                    "'timeout' must be a positive number of seconds");
    *ret = v->number.value;
    return 0;
}

static int parse_provision(checker *c, const kdl_node *n, vmfile_machine *m, size_t index)
{
    static const char *const kinds[] = {"shell", "file", NULL};
    cleanup_free char *kind = NULL;
    int r = check_shape(c, n, "provision", "\"shell\" or \"file\"", NULL, true);
    if (r < 0)
        return r;
    const kdl_value *kv = &n->args[0];
    if (kv->type != KDL_VALUE_STRING ||
        !(streq(kv->string.data, kinds[0]) || streq(kv->string.data, kinds[1])))
        return verr(c, kv->offset, "unknown provisioner", "provision", "provision", NULL,
                    "provisioner %zu must be \"shell\" or \"file\"", index + 1);
    kind = strdup(kv->string.data);
    if (!kind)
        return -ENOMEM;

    vmfile_step s = {.kind = streq(kind, "file") ? VMFILE_STEP_FILE : VMFILE_STEP_SHELL};
    s.line = kdl_line_at(c->doc->source, c->doc->source_len, &c->lines, n->offset);
    cleanup_free char *nodename = str_printf("provision \"%s\"", kind);
    const char *nn = nodename ? nodename : "provision";
    const char *allowed = s.kind == VMFILE_STEP_SHELL ? "inline, script, user, timeout"
                                                      : "source, destination, timeout";
    for (size_t i = 0; i < n->n_children && r >= 0; i++) {
        const kdl_node *ch = &n->children[i];
        const char *f = ch->name.data;
        if (streq(f, "timeout")) {
            r = s.timeout_sec > 0 ? verr(c, ch->offset, "given again", nn, f, NULL,
                                         "'%s' may appear only once in %s", f, nn)
                                  : parse_timeout(c, ch, &s.timeout_sec);
            continue;
        }
        char **slot = NULL;
        if (s.kind == VMFILE_STEP_SHELL)
            slot = streq(f, "inline")   ? &s.inline_cmd
                   : streq(f, "script") ? &s.script
                   : streq(f, "user")   ? &s.user
                                        : NULL;
        else
            slot = streq(f, "source") ? &s.source : streq(f, "destination") ? &s.destination : NULL;
        if (!slot) {
            r = verr(c, ch->offset, "unknown field", nn, f, NULL,
                     "%s has no field '%s': allowed are %s", nn, f, allowed);
            break;
        }
        if (*slot) {
            r = verr(c, ch->offset, "given again", nn, f, NULL, "'%s' may appear only once in %s",
                     f, nn);
            break;
        }
        if (slot == &s.inline_cmd)
            r = get_string(c, ch, f, "the commands to run with sh -c", NULL, slot);
        else if (slot == &s.user)
            r = get_string(c, ch, f, "a guest user: NAME, UID or UID:GID", NULL, slot);
        else if (slot == &s.destination)
            r = get_string(c, ch, f, "a path in the guest", NULL, slot);
        else
            r = get_path(c, ch, f,
                         slot == &s.script ? "the path of a local shell script"
                                           : "the path of a local file or directory",
                         slot);
    }
    if (r >= 0 && s.kind == VMFILE_STEP_SHELL && !!s.inline_cmd == !!s.script)
        r = verr(c, n->offset, s.inline_cmd ? "both given" : "command missing", nn, "inline", NULL,
                 "%s needs exactly one of inline \"COMMANDS\" or script \"PATH\"", nn);
    if (r >= 0 && s.kind == VMFILE_STEP_FILE && (!s.source || !s.destination))
        r = verr(c, n->offset, s.source ? "destination missing" : "source missing", nn,
                 s.source ? "destination" : "source", NULL,
                 "%s needs both source \"LOCAL-PATH\" and destination \"GUEST-PATH\"", nn);
    if (r >= 0 && s.kind == VMFILE_STEP_FILE && s.destination[0] != '/')
        r = verr(c, n->offset, "relative destination", nn, "destination", NULL,
                 "%s: destination must be an absolute guest path, not '%s'", nn, s.destination);
    if (r < 0) {
        step_clear(&s);
        return r;
    }
    /* m->steps has room for every provision node of the vm (parse_vm) */
    m->steps[m->n_steps++] = s;
    return 0;
}

/* network "user"|"tap"|"none"|"netns:PATH" [{ allow "CIDR[:PORT][/tcp|udp]"; allow-dns; allow-all;
 * rate-limit-mbps N; port "HOST:GUEST" }]: the children only with "tap" (docs/vmfile.md). */
static int parse_network(checker *c, const kdl_node *n, vmfile_machine *m, size_t *n_ports)
{
    static const char what[] = "one of \"user\", \"tap\", \"none\", \"netns:PATH\"";
    int r = check_shape(c, n, "network", what, NULL, true);
    if (r < 0)
        return r;
    const kdl_value *v = &n->args[0];
    if (v->type != KDL_VALUE_STRING || !str_ok(&v->string) ||
        (!streq(v->string.data, "user") && !streq(v->string.data, "tap") &&
         !streq(v->string.data, "none") && !podnet_path(v->string.data)))
        return verr(c, v->offset, "not allowed", "network", "network", NULL, "'network' must be %s",
                    what);
    if (!(m->net = strdup(v->string.data)))
        return -ENOMEM;
    if (n->n_children && !streq(m->net, "tap"))
        return verr(c, n->children[0].offset, "needs tap", "network", n->children[0].name.data,
                    "Use network \"tap\" for an egress allow-list and limits",
                    "'network \"%s\"' takes no children block (only \"tap\" does)", m->net);
    size_t n_allow = 0;
    for (size_t i = 0; i < n->n_children && r >= 0; i++) {
        const kdl_node *ch = &n->children[i];
        const char *f = ch->name.data;
        if (streq(f, "allow")) {
            cleanup_free char *text = NULL;
            r = get_string(c, ch, f, "CIDR[:PORT[-PORT]][/tcp|udp]", NULL, &text);
            if (r < 0)
                return r;
            vmctl_error *e = NULL;
            fw_allow a;
            if (fw_allow_parse("allow", text, &a, &e) < 0) {
                r = verr(c, ch->args[0].offset, "invalid allow entry", "network", "allow", NULL,
                         "%s", vmctl_error_get_message(e));
                vmctl_error_free(e);
                return r;
            }
            if (strv_push(&m->allow, &n_allow, text) < 0)
                return -ENOMEM;
        } else if (streq(f, "allow-dns") || streq(f, "allow-all")) {
            bool on = true;
            if (ch->n_args > 1 || ch->n_props || ch->n_children ||
                (ch->n_args == 1 && ch->args[0].type != KDL_VALUE_BOOL))
                return verr(c, ch->offset, "expected #true or #false", "network", f, NULL,
                            "'%s' takes no value, or #true or #false", f);
            if (ch->n_args == 1)
                on = ch->args[0].boolean;
            *(streq(f, "allow-dns") ? &m->config.allow_dns : &m->config.allow_all) = on;
        } else if (streq(f, "rate-limit-mbps")) {
            r = get_uint(c, ch, f, "megabit/s the guest receives at most", 1, 1000000,
                         &m->config.rate_limit_mbps);
        } else if (streq(f, "port")) {
            r = parse_port(c, ch, m, n_ports);
        } else {
            return verr(c, ch->offset, "unknown field", "network", f, NULL,
                        "'network' has no field '%s': allowed are allow, allow-dns, allow-all, "
                        "rate-limit-mbps, port",
                        f);
        }
    }
    m->config.allow = (const char *const *)m->allow;
    m->config.n_allow = n_allow;
    return r;
}

static const char vm_fields[] = "image, image-url, kernel, initrd, cmdline, vcpus, memory, disk, "
                                "machine, accel, network, port, cloud-init, ssh, env, disk-iops, "
                                "jail, cpu-quota, mount, provision, from";

/* from "VM/SNAP" [pool=N]: both parts VM names (a snapshot's name follows the same rule); pool
 * the size of the snapshot's warm pool, 0-64 */
static int parse_from(checker *c, const kdl_node *n, vmfile_machine *m)
{
    static const char *const props[] = {"pool", NULL};
    cleanup_free char *s = NULL;
    int r = get_string(c, n, "from", "a snapshot, \"VM/SNAP\"", props, &s);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n->n_props; i++) {
        const kdl_value *v = &n->props[i].value;
        if (v->type != KDL_VALUE_NUMBER || v->number.kind != KDL_NUMBER_INTEGER ||
            !v->number.is_int64 || v->number.i64 < 0 || v->number.i64 > VMCTL_POOL_MAX)
            return verr(c, v->offset,
                        v->type == KDL_VALUE_NUMBER ? "out of range" : "expected a number", "from",
                        "pool", NULL,
                        "'from' property 'pool' must be the size of the snapshot's warm pool (an "
                        "integer from 0 to %d)",
                        VMCTL_POOL_MAX);
        m->has_pool = true;
        m->pool = (unsigned)v->number.i64;
        m->pool_offset = v->offset;
    }
    char *slash = strchr(s, '/');
    if (slash)
        *slash = '\0';
    if (!slash || !name_is_valid(s) || !name_is_valid(slash + 1))
        return verr(c, n->args[0].offset, "not VM/SNAP", "from", "from", NULL,
                    "'from' must name a snapshot as \"VM/SNAP\" (see `vmctl snapshot list`)");
    m->from_vm = strdup(s);
    m->from_snap = strdup(slash + 1);
    return m->from_vm && m->from_snap ? 0 : -ENOMEM;
}

/* mount "SRC" "DST" [ro=#true]: SRC relative to the file's directory (checked by create) */
static int parse_mount(checker *c, const kdl_node *n, vmfile_machine *m)
{
    static const char what[] = "mount \"SRC\" \"DST\" [ro=#true]";
    if (n->n_args != 2)
        return verr(c, n->offset, "expected SRC and DST", "mount", "mount", NULL,
                    "'mount' takes two strings: %s", what);
    for (size_t i = 0; i < 2; i++) {
        const kdl_value *v = &n->args[i];
        if (v->type != KDL_VALUE_STRING || !str_ok(&v->string) || !v->string.len)
            return verr(c, v->offset, "expected a string", "mount", i ? "target" : "source", NULL,
                        "'mount' takes two strings: %s", what);
    }
    if (n->args[1].string.data[0] != '/')
        return verr(c, n->args[1].offset, "not absolute", "mount", "target", NULL,
                    "'mount' target '%s' must be an absolute guest path", n->args[1].string.data);
    bool ro = false;
    for (size_t i = 0; i < n->n_props; i++) {
        const kdl_value *v = &n->props[i].value;
        if (!streq(n->props[i].key.data, "ro"))
            return verr(c, n->props[i].offset, "unknown property", "mount", n->props[i].key.data,
                        NULL, "'mount' has no property '%s': it is %s", n->props[i].key.data, what);
        if (v->type != KDL_VALUE_BOOL)
            return verr(c, v->offset, "expected #true or #false", "mount", "ro", NULL,
                        "'mount' property 'ro' must be #true or #false");
        ro = v->boolean;
    }
    if (m->n_mounts >= VM_MAX_MOUNTS)
        return cap_err(c, n->offset, "mount", "mounts", m->n_mounts + 1, VM_MAX_MOUNTS, "per vm");
    vmctl_mount *grown = realloc(m->mounts, sizeof(*grown) * (m->n_mounts + 1));
    if (!grown)
        return -ENOMEM;
    m->mounts = grown;
    char *src = expand_path(c->dir, n->args[0].string.data);
    char *dst = strdup(n->args[1].string.data);
    if (!src || !dst) {
        free(src);
        free(dst);
        return -ENOMEM;
    }
    m->mounts[m->n_mounts++] = (vmctl_mount){.source = src, .target = dst, .read_only = ro};
    return 0;
}

static int parse_vm(checker *c, const kdl_node *vn, vmfile_machine *m)
{
    if (vn->n_args != 1 || vn->args[0].type != KDL_VALUE_STRING || !str_ok(&vn->args[0].string))
        return verr(c, vn->n_args ? vn->args[0].offset : vn->offset, "name missing", "vm", "name",
                    NULL, "'vm' takes exactly one value, the machine's name: vm \"NAME\" { ... }");
    const char *name = vn->args[0].string.data;
    if (!name_is_valid(name))
        return verr(c, vn->args[0].offset, "invalid name", "vm", "name", NULL,
                    "vm name '%s' is invalid: 1-63 letters, digits, '-', '_' and '.', starting "
                    "with a letter or digit",
                    name);
    if (vn->n_props)
        return verr(c, vn->props[0].offset, "unknown property", "vm", vn->props[0].key.data, NULL,
                    "'vm' has no properties; its fields go in the children block");
    m->name = strdup(name);
    if (!m->name)
        return -ENOMEM;
    c->vm = m->name;

    /* Room for every step and port up front (the caps bound it): no realloc per node. */
    size_t want_steps = 0, want_ports = 0;
    for (size_t i = 0; i < vn->n_children; i++) {
        const kdl_node *n = &vn->children[i];
        if (streq(n->name.data, "provision") && ++want_steps > VMFILE_MAX_STEPS) {
            size_t total = want_steps;
            for (size_t j = i + 1; j < vn->n_children; j++)
                total += streq(vn->children[j].name.data, "provision");
            return cap_err(c, n->offset, "provision", "provisioning steps", total, VMFILE_MAX_STEPS,
                           "per vm");
        }
        if (streq(n->name.data, "network")) /* its port nodes count too */
            for (size_t j = 0; j < n->n_children; j++)
                want_ports += streq(n->children[j].name.data, "port");
        if (streq(n->name.data, "port") && ++want_ports > VMFILE_MAX_PORTS) {
            size_t total = want_ports;
            for (size_t j = i + 1; j < vn->n_children; j++)
                total += streq(vn->children[j].name.data, "port");
            return cap_err(c, n->offset, "port", "port forwards", total, VMFILE_MAX_PORTS,
                           "per vm");
        }
    }
    if (want_steps && !(m->steps = calloc(want_steps, sizeof(*m->steps))))
        return -ENOMEM;
    if (want_ports && !(m->ports = calloc(want_ports, sizeof(*m->ports))))
        return -ENOMEM;

    const kdl_node *seen[20] = {};
    static const char *const once[] = {"image",   "image-url",  "kernel", "initrd",  "cmdline",
                                       "vcpus",   "memory",     "disk",   "machine", "accel",
                                       "network", "cloud-init", "ssh",    "env",     "disk-iops",
                                       "jail",    "cpu-quota",  "from",   NULL};
    size_t n_ports = 0;
    for (size_t i = 0; i < vn->n_children; i++) {
        const kdl_node *n = &vn->children[i];
        const char *f = n->name.data;
        int r = 0;
        size_t k;
        for (k = 0; once[k]; k++)
            if (streq(once[k], f))
                break;
        if (once[k]) {
            r = set_once(c, n, f, &seen[k]);
            if (r < 0)
                return r;
        }
        if (streq(f, "image")) {
            cleanup_free char *s = NULL;
            r = get_string(c, n, f, "an image cache name or a path", NULL, &s);
            if (r >= 0 && (strchr(s, '/') || s[0] == '.' || s[0] == '~')) {
                m->image = expand_path(c->dir, s);
                if (!m->image)
                    return -ENOMEM;
                if (access(m->image, R_OK) < 0) {
                    int e = errno;
                    verr(c, n->args[0].offset, "not found", f, f, NULL,
                         "'image' names '%s', which does not exist or is not readable", m->image);
                    return err_cause(c->reterr, e);
                }
            } else if (r >= 0) {
                m->image = TAKE_PTR(s);
            }
        } else if (streq(f, "image-url")) {
            static const char *const props[] = {"sha256", "name", NULL};
            r = get_string(c, n, f, "an http, https or file URL", props, &m->image_url);
            for (size_t j = 0; r >= 0 && j < n->n_props; j++) {
                const kdl_value *v = &n->props[j].value;
                const char *key = n->props[j].key.data;
                if (v->type != KDL_VALUE_STRING || !str_ok(&v->string) || !v->string.len)
                    return verr(c, v->offset, "expected a string", f, key, NULL,
                                "'image-url' property '%s' must be a string", key);
                char **slot = streq(key, "sha256") ? &m->image_sha256 : &m->image_name;
                *slot = strdup(v->string.data);
                if (!*slot)
                    return -ENOMEM;
            }
        } else if (streq(f, "kernel")) {
            r = get_path(c, n, f, "the path of a kernel", &m->kernel);
        } else if (streq(f, "initrd")) {
            r = get_path(c, n, f, "the path of an initramfs", &m->initrd);
        } else if (streq(f, "cmdline")) {
            r = get_string(c, n, f, "kernel command-line arguments", NULL, &m->cmdline);
        } else if (streq(f, "vcpus")) {
            r = get_uint(c, n, f, "a number of virtual CPUs", 1, 255, &m->config.vcpus);
        } else if (streq(f, "memory")) {
            r = parse_memory(c, n, &m->config.memory_mib);
        } else if (streq(f, "disk")) {
            r = get_uint(c, n, f, "a disk size in GiB", 1, 65536, &m->config.disk_gib);
        } else if (streq(f, "machine")) {
            static const char *const a[] = {"microvm", "q35", NULL};
            r = one_of(c, n, f, a, &m->machine);
        } else if (streq(f, "accel")) {
            static const char *const a[] = {"auto", "kvm", "tcg", NULL};
            r = one_of(c, n, f, a, &m->accel);
        } else if (streq(f, "network")) {
            r = parse_network(c, n, m, &n_ports);
        } else if (streq(f, "disk-iops")) {
            r = get_uint(c, n, f, "disk read+write operations per second", 1, 10000000,
                         &m->config.disk_iops);
        } else if (streq(f, "port")) {
            r = parse_port(c, n, m, &n_ports);
        } else if (streq(f, "cloud-init")) {
            r = parse_cloud_init(c, n, m);
        } else if (streq(f, "ssh")) {
            r = parse_ssh(c, n, m);
        } else if (streq(f, "env")) {
            r = parse_env(c, n, m);
        } else if (streq(f, "jail")) {
            /* docs/isolation.md: jail #false is --no-jail */
            r = check_shape(c, n, f, "#true or #false", NULL, false);
            if (r >= 0 && n->args[0].type != KDL_VALUE_BOOL)
                r = verr(c, n->args[0].offset, "expected a boolean", f, f, NULL,
                         "'jail' must be #true or #false");
            if (r >= 0)
                m->config.no_jail = !n->args[0].boolean;
        } else if (streq(f, "cpu-quota")) {
            r = check_shape(c, n, f, "host CPUs (0.5: half of one core)", NULL, false);
            const kdl_value *v = r >= 0 ? &n->args[0] : NULL;
            if (v &&
                (v->type != KDL_VALUE_NUMBER ||
                 (v->number.kind != KDL_NUMBER_INTEGER && v->number.kind != KDL_NUMBER_DECIMAL) ||
                 !(v->number.value >= 0.01 && v->number.value <= 255)))
                r = verr(c, v->offset, "out of range", f, f, NULL,
                         "'cpu-quota' must be a number of host CPUs from 0.01 to 255");
            if (r >= 0)
                m->config.cpu_quota = v->number.value;
        } else if (streq(f, "mount")) {
            r = parse_mount(c, n, m);
        } else if (streq(f, "provision")) {
            r = parse_provision(c, n, m, m->n_steps);
        } else if (streq(f, "from")) {
            r = parse_from(c, n, m);
        } else {
            return verr(c, n->offset, "unknown field", "vm", f, NULL,
                        "'vm' has no field '%s': allowed are %s", f, vm_fields);
        }
        if (r < 0)
            return r;
    }

    /* Image source: at most one of image, image-url, kernel. */
    const kdl_node *img = seen[0], *url = seen[1], *kern = seen[2];
    if ((img && url) || (img && kern) || (url && kern)) {
        const kdl_node *second = kern ? kern : url;
        return verr(c, second->offset, "second image source", "vm", second->name.data, NULL,
                    "give at most one image source: image, image-url or kernel (with initrd, "
                    "cmdline); none means the default guest");
    }
    /* from: the snapshot has the machine; only provisioning steps may go with it */
    const kdl_node *from = seen[17];
    for (size_t i = 0; from && i < vn->n_children; i++) {
        const kdl_node *n = &vn->children[i];
        if (n != from && !streq(n->name.data, "provision"))
            return verr(c, n->offset, "comes from the snapshot", "vm", n->name.data, NULL,
                        "'%s' cannot go with 'from': a machine cloned from a snapshot has the "
                        "snapshot's configuration (only 'provision' steps may go with it)",
                        n->name.data);
    }
    for (size_t k = 3; k <= 4; k++)
        if (seen[k] && !kern)
            return verr(c, seen[k]->offset, "needs kernel", "vm", once[k], NULL,
                        "'%s' needs 'kernel' (it applies to a directly booted kernel only)",
                        once[k]);

    m->config.name = m->name;
    m->config.image = m->image;
    m->config.kernel = m->kernel;
    m->config.initrd = m->initrd;
    m->config.cmdline = m->cmdline;
    m->config.machine = m->machine;
    m->config.accel = m->accel;
    m->config.net = m->net;
    m->config.ports = m->ports;
    m->config.n_ports = n_ports;
    m->config.cloud_init = m->cloud_init;
    m->config.ssh_key = m->ssh_key;
    m->config.env = m->env;
    m->config.mounts = m->mounts;
    m->config.n_mounts = m->n_mounts;
    c->vm = NULL;
    return 0;
}

/* Machine names seen so far: an open-addressing set (the duplicate check is linear overall). */
typedef struct name_set {
    const char **slot;
    size_t mask;
} name_set;

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* 1 when name was already there, 0 when added. The set never fills: it has 2x the room. */
static int name_set_add(name_set *set, const char *name)
{
    for (size_t i = name_hash(name) & set->mask;; i = (i + 1) & set->mask) {
        if (!set->slot[i]) {
            set->slot[i] = name;
            return 0;
        }
        if (streq(set->slot[i], name))
            return 1;
    }
}

static int too_big(vmctl_error **reterr, const char *name, uint64_t len)
{
    int r = err_make(reterr, VMCTL_E_VMFILE_PARSE_FAILED, EFBIG,
                     "%s: the VMFile is %llu bytes, more than a VMFile may hold (%u bytes)", name,
                     (unsigned long long)len, VMFILE_MAX_BYTES);
    err_detail(reterr, "path", "%s", name);
    err_detail_num(reterr, "limit", VMFILE_MAX_BYTES);
    err_detail_num(reterr, "count", (double)len);
    err_help(reterr, "Split the machines over several VMFiles (docs/vmfile.md, Limits)");
    return r;
}

int vmfile_parse(const char *name, const char *dir, const char *buf, size_t len, vmfile **ret,
                 vmctl_error **reterr)
{
    if (len > VMFILE_MAX_BYTES)
        return too_big(reterr, name, len);
    cleanup_kdl_document kdl_document *doc = NULL;
    int r = kdl_parse(name, buf, len, KDL_VERSION_FALLBACK, &doc, reterr);
    if (r < 0)
        return r;

    cleanup_vmfile vmfile *f = calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    f->path = strdup(name);
    f->dir = strdup(dir);
    if (!f->path || !f->dir)
        return -ENOMEM;

    checker c = {.doc = doc, .dir = dir, .reterr = reterr};
    if (doc->n_nodes > VMFILE_MAX_MACHINES)
        return cap_err(&c, doc->nodes[VMFILE_MAX_MACHINES].offset, "vm", "vm nodes", doc->n_nodes,
                       VMFILE_MAX_MACHINES, "per VMFile");
    size_t room = 16;
    while (room < 2 * doc->n_nodes)
        room *= 2;
    cleanup_free const char **slots = calloc(room, sizeof(*slots));
    f->machines = calloc(doc->n_nodes ? doc->n_nodes : 1, sizeof(*f->machines));
    if (!slots || !f->machines)
        return -ENOMEM;
    name_set names = {.slot = slots, .mask = room - 1};
    for (size_t i = 0; i < doc->n_nodes; i++) {
        const kdl_node *n = &doc->nodes[i];
        if (!streq(n->name.data, "vm"))
            return verr(&c, n->offset, "unknown node", n->name.data, NULL, NULL,
                        "unknown top-level node '%s': a VMFile holds only vm \"NAME\" { ... } "
                        "nodes",
                        n->name.data);
        vmfile_machine *m = &f->machines[f->n_machines++];
        r = parse_vm(&c, n, m);
        if (r < 0)
            return r;
        if (name_set_add(&names, m->name))
            return verr(&c, n->args[0].offset, "duplicate name", "vm", "name", NULL,
                        "vm \"%s\" is defined twice: machine names are unique in a VMFile",
                        m->name);
        /* one size per snapshot's pool (the pool is the snapshot's, not the machine's) */
        for (size_t j = 0; m->has_pool && j + 1 < f->n_machines; j++) {
            const vmfile_machine *o = &f->machines[j];
            if (o->has_pool && o->pool != m->pool && streq(o->from_vm, m->from_vm) &&
                streq(o->from_snap, m->from_snap))
                return verr(&c, m->pool_offset, "another size", "from", "pool", NULL,
                            "'pool' of '%s/%s' is %u in vm \"%s\": give the snapshot's pool one "
                            "size",
                            m->from_vm, m->from_snap, o->pool, o->name);
        }
    }
    if (f->n_machines == 0)
        return verr(&c, 0, "no vm here", "vm", NULL, NULL,
                    "the VMFile describes no machine: add vm \"NAME\" { ... }");
    *ret = TAKE_PTR(f);
    return 0;
}

int vmfile_load(const char *path, vmfile **ret, vmctl_error **reterr)
{
    cleanup_free char *cwd = getcwd(NULL, 0);
    if (!cwd)
        return err_make(reterr, VMCTL_E_IO, errno, "cannot get the current directory");
    cleanup_free char *abs = path ? expand_path(cwd, path) : str_printf("%s/%s", cwd, VMFILE_NAME);
    if (!abs)
        return -ENOMEM;
    cleanup_free char *data = NULL;
    size_t len = 0;
    /* Refuse a huge file before reading it (vmfile_parse checks the length again). */
    struct stat st;
    if (stat(abs, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size > VMFILE_MAX_BYTES)
        return too_big(reterr, path ? path : VMFILE_NAME, (uint64_t)st.st_size);
    int r = read_file(abs, &data, &len);
    if (r == -ENOENT || r == -ENOTDIR) {
        if (path) {
            r = err_make(reterr, VMCTL_E_VMFILE_NOT_FOUND, -r, "VMFile '%s' does not exist", abs);
            err_help(reterr, "Check the path given with --file, or run vmctl in the directory of "
                             "your VMFile.kdl");
        } else
            r = err_make(reterr, VMCTL_E_VMFILE_NOT_FOUND, -r,
                         "no " VMFILE_NAME " in the current directory '%s'", cwd);
        err_detail(reterr, "path", "%s", abs);
        return r;
    }
    if (r < 0) {
        r = err_make(reterr, VMCTL_E_IO, -r, "cannot read VMFile '%s'", abs);
        err_detail(reterr, "path", "%s", abs);
        return r;
    }
    /* Paths resolve against the directory of the file itself (symlinks and .. resolved). */
    cleanup_free char *real = realpath(abs, NULL);
    cleanup_free char *dir = strdup(real ? real : abs);
    if (!dir)
        return -ENOMEM;
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = '\0';
    else if (slash)
        *slash = '\0';
    /* Diagnostics name the file as the user gave it. */
    cleanup_vmfile vmfile *f = NULL;
    r = vmfile_parse(path ? path : VMFILE_NAME, dir, data, len, &f, reterr);
    if (r < 0)
        return r;
    f->project = strdup(real ? real : abs);
    if (!f->project)
        return -ENOMEM;
    *ret = TAKE_PTR(f);
    return 0;
}

/* --- the public handle --- */

int vmctl_vmfile_load(const char *path, vmctl_vmfile **ret, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ret, reterr);
    cleanup_vmfile vmfile *f = NULL;
    int r = vmfile_load(path, &f, reterr);
    if (r < 0)
        return r;
    vmctl_vmfile *h = calloc(1, sizeof(*h));
    if (!h)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    h->f = TAKE_PTR(f);
    *ret = h;
    return 0;
}

void vmctl_vmfile_free(vmctl_vmfile *f)
{
    if (!f)
        return;
    vmfile_free(f->f);
    free(f);
}

size_t vmctl_vmfile_n_machines(const vmctl_vmfile *f)
{
    return f ? f->f->n_machines : 0;
}

const char *vmctl_vmfile_machine_name(const vmctl_vmfile *f, size_t i)
{
    return f && i < f->f->n_machines ? f->f->machines[i].name : NULL;
}

const vmctl_vm_config *vmctl_vmfile_machine_config(const vmctl_vmfile *f, size_t i)
{
    return f && i < f->f->n_machines ? &f->f->machines[i].config : NULL;
}

size_t vmctl_vmfile_machine_n_steps(const vmctl_vmfile *f, size_t i)
{
    return f && i < f->f->n_machines ? f->f->machines[i].n_steps : 0;
}
