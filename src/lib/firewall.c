/* SPDX-License-Identifier: MIT */
/* The host firewall of TAP VMs (firewall.h): allow-list parsing and validation, and the nftables
 * table `inet vmctl` through libnftables, loaded on first use (dl.h). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <nftables/libnftables.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dl.h"
#include "error.h"
#include "firewall.h"
#include "util/util.h"

/* --- parsing and validation (no netfilter) ------------------------------------------------- */

#define ALLOW_SYNTAX "CIDR[:PORT[-PORT][/tcp|udp]], e.g. 203.0.113.0/24:443/tcp"

__attribute__((format(printf, 5, 6))) static int invalid(vmctl_error **reterr, const char *field,
                                                         const char *value, const char *allowed,
                                                         const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r =
        err_invalid_fieldv(reterr, VMCTL_E_NETWORK_CONFIG_INVALID, field, value, allowed, fmt, ap);
    va_end(ap);
    err_help(reterr, "Write %s as %s.", field, allowed);
    return r;
}

/* A decimal number of at most max, no sign, no leading zero (so "010" is not read as octal or
 * as ten by one reader and eight by another). *end: first character after it. */
static bool parse_decimal(const char *s, const char **end, unsigned max, unsigned *ret)
{
    if (*s < '0' || *s > '9')
        return false;
    if (s[0] == '0' && s[1] >= '0' && s[1] <= '9')
        return false;
    unsigned long v = 0;
    const char *p = s;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (unsigned long)(*p - '0');
        if (v > max)
            return false;
        p++;
    }
    *end = p;
    *ret = (unsigned)v;
    return true;
}

static bool parse_ipv4(const char *s, const char **end, uint32_t *ret)
{
    uint32_t a = 0;
    for (int i = 0; i < 4; i++) {
        unsigned octet;
        if (i > 0) {
            if (*s != '.')
                return false;
            s++;
        }
        if (!parse_decimal(s, &s, 255, &octet))
            return false;
        a = a << 8 | octet;
    }
    *end = s;
    *ret = a;
    return true;
}

static uint32_t prefix_mask(unsigned prefix)
{
    return prefix == 0 ? 0 : UINT32_MAX << (32 - prefix);
}

static void format_ipv4(uint32_t a, char *buf, size_t size)
{
    snprintf(buf, size, "%u.%u.%u.%u", a >> 24, (a >> 16) & 0xff, (a >> 8) & 0xff, a & 0xff);
}

int fw_allow_parse(const char *field, const char *text, fw_allow *ret, vmctl_error **reterr)
{
    if (!field)
        field = "allow";
    if (!text || !*text)
        return invalid(reterr, field, text ? text : "", ALLOW_SYNTAX, "empty %s entry", field);
    fw_allow a = {.prefix = 32};
    const char *p = text, *q;
    uint32_t addr;
    if (!parse_ipv4(p, &q, &addr))
        return invalid(reterr, field, text, ALLOW_SYNTAX,
                       "invalid %s '%s': '%.*s' is not an IPv4 address (four numbers 0-255 "
                       "separated by dots)",
                       field, text, (int)strcspn(p, "/:"), p);
    p = q;
    if (*p == '/') {
        unsigned prefix;
        const char *start = ++p;
        if (!parse_decimal(p, &q, 32, &prefix) || (*q && *q != ':'))
            return invalid(reterr, field, text, ALLOW_SYNTAX,
                           "invalid %s '%s': prefix length '%.*s' is not a number from 0 to 32",
                           field, text, (int)strcspn(start, ":"), start);
        a.prefix = (uint8_t)prefix;
        p = q;
    }
    if (addr & ~prefix_mask(a.prefix)) {
        char net[16];
        format_ipv4(addr & prefix_mask(a.prefix), net, sizeof(net));
        int r = invalid(reterr, field, text, ALLOW_SYNTAX,
                        "invalid %s '%s': '%.*s' has host bits set (the network is '%s/%u')", field,
                        text, (int)strcspn(text, ":"), text, net, a.prefix);
        err_help(reterr, "Write the network address: '%s/%u'.", net, a.prefix);
        return r;
    }
    a.addr = addr;
    if (*p == ':') {
        const char *start = ++p;
        unsigned lo, hi;
        if (!parse_decimal(p, &q, 65535, &lo) || lo == 0)
            return invalid(reterr, field, text, ALLOW_SYNTAX,
                           "invalid %s '%s': port '%.*s' is not a number from 1 to 65535", field,
                           text, (int)strcspn(start, "-/"), start);
        hi = lo;
        p = q;
        if (*p == '-') {
            const char *hstart = ++p;
            if (!parse_decimal(p, &q, 65535, &hi) || hi == 0)
                return invalid(reterr, field, text, ALLOW_SYNTAX,
                               "invalid %s '%s': port '%.*s' is not a number from 1 to 65535",
                               field, text, (int)strcspn(hstart, "/"), hstart);
            if (hi < lo)
                return invalid(reterr, field, text, ALLOW_SYNTAX,
                               "invalid %s '%s': port range '%.*s' ends before it starts", field,
                               text, (int)(q - start), start);
            p = q;
        }
        a.port_lo = (uint16_t)lo;
        a.port_hi = (uint16_t)hi;
        if (*p == '/') {
            p++;
            if (streq(p, "tcp"))
                a.proto = IPPROTO_TCP;
            else if (streq(p, "udp"))
                a.proto = IPPROTO_UDP;
            else
                return invalid(reterr, field, text, ALLOW_SYNTAX,
                               "invalid %s '%s': protocol '%s' is not tcp or udp", field, text, p);
            p += strlen(p);
        }
    }
    if (*p)
        return invalid(reterr, field, text, ALLOW_SYNTAX, "invalid %s '%s': unexpected '%s'", field,
                       text, p);
    *ret = a;
    return 0;
}

void fw_allow_format(const fw_allow *a, char *buf, size_t size)
{
    char addr[16], ports[24] = "";
    format_ipv4(a->addr, addr, sizeof(addr));
    const char *proto = a->proto == IPPROTO_TCP ? "/tcp" : a->proto == IPPROTO_UDP ? "/udp" : "";
    if (a->port_lo && a->port_hi > a->port_lo)
        snprintf(ports, sizeof(ports), ":%u-%u%s", a->port_lo, a->port_hi, proto);
    else if (a->port_lo)
        snprintf(ports, sizeof(ports), ":%u%s", a->port_lo, proto);
    else if (a->proto)
        snprintf(ports, sizeof(ports), ":1-65535%s", proto);
    snprintf(buf, size, "%s/%u%s", addr, a->prefix, ports);
}

static bool ifname_is_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > 15)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') && !(c >= '0' && c <= '9') &&
            c != '-' && c != '_' && c != '.')
            return false;
    }
    return true;
}

static int check_allow(const fw_allow *a, size_t i, vmctl_error **reterr)
{
    char text[FW_ALLOW_TEXT_MAX + 16];
    fw_allow_format(a, text, sizeof(text));
    if (a->prefix > 32)
        return invalid(reterr, "allow", text, ALLOW_SYNTAX,
                       "invalid allow entry %zu: prefix length %u is more than 32", i + 1,
                       a->prefix);
    if (a->addr & ~prefix_mask(a->prefix))
        return invalid(reterr, "allow", text, ALLOW_SYNTAX,
                       "invalid allow entry %zu '%s': host bits set", i + 1, text);
    if (a->proto != 0 && a->proto != IPPROTO_TCP && a->proto != IPPROTO_UDP)
        return invalid(reterr, "allow", text, ALLOW_SYNTAX,
                       "invalid allow entry %zu '%s': protocol %u is not tcp or udp", i + 1, text,
                       a->proto);
    if (a->port_lo && a->port_hi < a->port_lo)
        return invalid(reterr, "allow", text, ALLOW_SYNTAX,
                       "invalid allow entry %zu '%s': port range %u-%u ends before it starts",
                       i + 1, text, a->port_lo, a->port_hi);
    return 0;
}

int fw_vm_validate(const fw_vm *vm, vmctl_error **reterr)
{
    if (!vm)
        return err_make(reterr, VMCTL_E_NETWORK_CONFIG_INVALID, EINVAL, "no VM given");
    if (!name_is_valid(vm->name))
        return invalid(reterr, "name", vm->name ? vm->name : "", "1-63 of [A-Za-z0-9_.-]",
                       "invalid VM name '%s' for the firewall", vm->name ? vm->name : "");
    if (!ifname_is_valid(vm->ifname))
        return invalid(reterr, "ifname", vm->ifname ? vm->ifname : "", "1-15 of [A-Za-z0-9_.-]",
                       "invalid interface name '%s' for VM '%s'", vm->ifname ? vm->ifname : "",
                       vm->name);
    if (vm->guest_ip == 0 || vm->guest_ip == UINT32_MAX)
        return invalid(reterr, "guest_ip", NULL, "a unicast IPv4 address",
                       "VM '%s' has no guest address", vm->name);
    if (vm->uplink && !ifname_is_valid(vm->uplink))
        return invalid(reterr, "uplink", vm->uplink, "1-15 of [A-Za-z0-9_.-]",
                       "invalid uplink interface name '%s'", vm->uplink);
    if (vm->n_dns && !vm->dns)
        return invalid(reterr, "dns", NULL, "IPv4 addresses", "no resolver addresses given");
    for (size_t i = 0; i < vm->n_dns; i++)
        if (vm->dns[i] == 0 || vm->dns[i] == UINT32_MAX)
            return invalid(reterr, "dns", NULL, "unicast IPv4 addresses",
                           "resolver %zu of VM '%s' is not a unicast address", i + 1, vm->name);
    if (vm->n_allow && !vm->allow)
        return invalid(reterr, "allow", NULL, ALLOW_SYNTAX, "no allow entries given");
    for (size_t i = 0; i < vm->n_allow; i++) {
        int r = check_allow(&vm->allow[i], i, reterr);
        if (r < 0)
            return r;
    }
    if (vm->n_fwd && !vm->fwd)
        return invalid(reterr, "port", NULL, "HOST:GUEST[/udp]", "no forwards given");
    for (size_t i = 0; i < vm->n_fwd; i++) {
        const fw_forward *f = &vm->fwd[i];
        if (!f->host_port || !f->guest_port)
            return invalid(reterr, "port", NULL, "HOST:GUEST[/udp], ports 1-65535",
                           "forward %zu of VM '%s' has port 0 (%u:%u)", i + 1, vm->name,
                           f->host_port, f->guest_port);
        if (f->proto != IPPROTO_TCP && f->proto != IPPROTO_UDP)
            return invalid(reterr, "port", NULL, "HOST:GUEST[/udp]",
                           "forward %zu of VM '%s' has protocol %u, not tcp or udp", i + 1,
                           vm->name, f->proto);
        for (size_t j = 0; j < i; j++)
            if (vm->fwd[j].host_port == f->host_port && vm->fwd[j].proto == f->proto)
                return invalid(reterr, "port", NULL, "each host port once",
                               "host port %u/%s is forwarded twice", f->host_port,
                               f->proto == IPPROTO_TCP ? "tcp" : "udp");
    }
    return 0;
}

/* --- libnftables ---------------------------------------------------------------------------- */

static DLSYM_PROTOTYPE(nft_ctx_new);
static DLSYM_PROTOTYPE(nft_ctx_free);
static DLSYM_PROTOTYPE(nft_ctx_buffer_output);
static DLSYM_PROTOTYPE(nft_ctx_buffer_error);
static DLSYM_PROTOTYPE(nft_ctx_get_output_buffer);
static DLSYM_PROTOTYPE(nft_ctx_get_error_buffer);
static DLSYM_PROTOTYPE(nft_ctx_output_set_flags);
static DLSYM_PROTOTYPE(nft_run_cmd_from_buffer);
static const dl_symbol nft_symbols[] = {
    DL_SYMBOL(nft_ctx_new),
    DL_SYMBOL(nft_ctx_free),
    DL_SYMBOL(nft_ctx_buffer_output),
    DL_SYMBOL(nft_ctx_buffer_error),
    DL_SYMBOL(nft_ctx_get_output_buffer),
    DL_SYMBOL(nft_ctx_get_error_buffer),
    DL_SYMBOL(nft_ctx_output_set_flags),
    DL_SYMBOL(nft_run_cmd_from_buffer),
};
dl_library dl_lib_nftables =
    DL_LIBRARY("libnftables.so.1", "libnftables1", "the firewall of TAP VMs", nft_symbols);

#define TABLE "inet vmctl"

/* The chains of one VM: "<prefix><name>". The prefixes keep a VM name from meeting an nft keyword
 * ("dnat", "accept") or a base chain's name. */
static const char *const vm_chain_prefixes[] = {"out-", "in-", "host-", "nat-", "dnat-"};
enum { CH_OUT, CH_IN, CH_HOST, CH_NAT, CH_DNAT, _CH_MAX };
/* The maps whose elements jump to a VM's chains, and the set of every VM's TAP. */
static const char *const vm_maps[] = {"from_vm", "to_vm", "host_from_vm", "nat_src", "fwd_ports"};

typedef struct nft_ctx nft_ctx;

static void nft_ctx_freep(nft_ctx **c)
{
    if (*c)
        sym_nft_ctx_free(*c);
}
#define cleanup_nft __attribute__((cleanup(nft_ctx_freep)))

static int fw_open(nft_ctx **ret, vmctl_error **reterr)
{
    int r = dl_open(&dl_lib_nftables, reterr);
    if (r < 0)
        return r;
    nft_ctx *c = sym_nft_ctx_new(NFT_CTX_DEFAULT);
    if (!c)
        return err_make(reterr, VMCTL_E_NETWORK_FIREWALL_FAILED, ENOMEM,
                        "cannot create a libnftables context");
    if (sym_nft_ctx_buffer_output(c) < 0 || sym_nft_ctx_buffer_error(c) < 0) {
        sym_nft_ctx_free(c);
        return err_make(reterr, VMCTL_E_NETWORK_FIREWALL_FAILED, ENOMEM,
                        "cannot set up libnftables' buffers");
    }
    *ret = c;
    return 0;
}

/* The errno a libnftables error text stands for (it reports strerror() text, not numbers). */
static int nft_errno(const char *msg)
{
    static const struct {
        const char *text;
        int err;
    } map[] = {
        {"Operation not permitted", EPERM},
        {"Permission denied", EACCES},
        {"File exists", EEXIST},
        {"No such file or directory", ENOENT},
        {"Device or resource busy", EBUSY},
        {"Protocol not supported", EPROTONOSUPPORT},
        {"Cannot allocate memory", ENOMEM},
    };
    for (size_t i = 0; msg && i < ELEMENTSOF(map); i++)
        if (strstr(msg, map[i].text))
            return map[i].err;
    return EIO;
}

/* Run cmds as one transaction. On failure: network::firewall_failed with what (a sentence
 * fragment, "cannot install the firewall of VM 'x'") and libnftables' message as a note. */
__attribute__((format(printf, 4, 5))) static int fw_run(nft_ctx *c, const char *cmds,
                                                        vmctl_error **reterr, const char *fmt, ...)
{
    if (sym_nft_run_cmd_from_buffer(c, cmds) == 0)
        return 0;
    const char *e = sym_nft_ctx_get_error_buffer(c);
    int err = nft_errno(e);
    va_list ap;
    va_start(ap, fmt);
    int r = err_makev(reterr, VMCTL_E_NETWORK_FIREWALL_FAILED, err, fmt, ap);
    va_end(ap);
    if (e && *e) {
        /* the note: libnftables' message without its trailing newline */
        size_t n = strlen(e);
        while (n && e[n - 1] == '\n')
            n--;
        err_note(reterr, "%.*s", (int)(n > 4000 ? 4000 : n), e);
    }
    if (err == EPERM || err == EACCES)
        err_help(reterr, "Run vmctl as root or give it CAP_NET_ADMIN; `vmctl doctor` checks the "
                         "host.");
    return r;
}

enum {
    LOAD_MAPS = 1 << 0,   /* the maps whose elements jump to a VM's chains, with their elements */
    LOAD_CHAINS = 1 << 1, /* the table's chains, without their rules */
    LOAD_TABLE = 1 << 2,  /* everything, rules too: slow with many VMs (stats only) */
};

/* Append the objects of one JSON listing in c's output buffer to the array all. */
static int fw_collect(nft_ctx *c, json_t *all, const char *what, vmctl_error **reterr)
{
    json_error_t je;
    json_t *j = json_loads(sym_nft_ctx_get_output_buffer(c), 0, &je);
    if (!j)
        return err_make(reterr, VMCTL_E_NETWORK_FIREWALL_FAILED, EIO,
                        "cannot parse libnftables' listing of %s: %s", what, je.text);
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(j, "nftables"), i, o)
    {
        /* `list chains inet` lists every inet table's: keep ours */
        if (json_object_get(o, "metainfo"))
            continue;
        json_t *ch = json_object_get(o, "chain");
        const char *t = json_string_value(json_object_get(ch, "table"));
        if (ch && (!t || !streq(t, "vmctl")))
            continue;
        json_array_append(all, o);
    }
    json_decref(j);
    return 0;
}

/* What of the vmctl table `what` asks for, as {"nftables": [objects]} in libnftables' JSON, or
 * *ret NULL when there is no table. Listing the whole table renders every rule of every VM
 * (100 ms at 200 VMs): apply and remove read only the maps (and chains). */
static int fw_load(nft_ctx *c, unsigned what, json_t **ret, vmctl_error **reterr)
{
    *ret = NULL;
    json_t *all = json_array();
    if (!all)
        return -ENOMEM;
    sym_nft_ctx_output_set_flags(c, NFT_CTX_OUTPUT_JSON);
    /* `list chains` tells whether the table exists (apply always makes its base chains):
     * `list tables` costs as much as listing every rule (libnftables 1.0.6 fills its whole
     * cache for it, 70 ms at 200 VMs), `list chains` a tenth of it */
    int r = fw_run(c, "list chains inet", reterr, "cannot list the nftables chains");
    if (r < 0)
        goto out;
    size_t before = json_array_size(all);
    if ((r = fw_collect(c, all, "the chains of '" TABLE "'", reterr)) < 0)
        goto out;
    if (json_array_size(all) == before)
        goto out;
    if (!(what & LOAD_CHAINS) || (what & LOAD_TABLE))
        json_array_clear(all);
    if (what & LOAD_TABLE) {
        if ((r = fw_run(c, "list table " TABLE, reterr, "cannot list table '" TABLE "'")) < 0 ||
            (r = fw_collect(c, all, "table '" TABLE "'", reterr)) < 0)
            goto out;
        what = 0;
    }
    for (size_t m = 0; (what & LOAD_MAPS) && m < ELEMENTSOF(vm_maps); m++) {
        char cmd[64];
        snprintf(cmd, sizeof(cmd), "list map " TABLE " %s", vm_maps[m]);
        if ((r = fw_run(c, cmd, reterr, "cannot list map '%s' of table '" TABLE "'", vm_maps[m])) <
                0 ||
            (r = fw_collect(c, all, vm_maps[m], reterr)) < 0)
            goto out;
    }
    *ret = json_pack("{s:O}", "nftables", all);
    if (!*ret)
        r = -ENOMEM;
out:
    json_decref(all);
    sym_nft_ctx_output_set_flags(c, 0);
    return r;
}

/* The VM a chain belongs to (NULL for the base chains), and which of its chains it is. */
static const char *chain_vm(const char *chain, int *kind)
{
    for (int k = 0; k < _CH_MAX; k++)
        if (str_startswith(chain, vm_chain_prefixes[k]) && chain[strlen(vm_chain_prefixes[k])]) {
            if (kind)
                *kind = k;
            return chain + strlen(vm_chain_prefixes[k]);
        }
    return NULL;
}

static bool chain_of(const char *chain, const char *vm)
{
    const char *n = chain ? chain_vm(chain, NULL) : NULL;
    return n && streq(n, vm);
}

/* Render one JSON key of a map element back into nft syntax ("tcp . 8080", "10.0.0.2",
 * "\"vt0\""): false for anything vmctl would not have written. */
static bool key_text(FILE *f, json_t *k, bool quote_strings)
{
    if (json_is_string(k)) {
        const char *s = json_string_value(k);
        for (const char *p = s; *p; p++)
            if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", *p))
                return false;
        fprintf(f, quote_strings ? "\"%s\"" : "%s", s);
        return true;
    }
    if (json_is_integer(k)) {
        fprintf(f, "%lld", (long long)json_integer_value(k));
        return true;
    }
    json_t *concat = json_object_get(k, "concat");
    if (json_is_array(concat)) {
        size_t i;
        json_t *v;
        json_array_foreach(concat, i, v)
        {
            if (i)
                fputs(" . ", f);
            if (!key_text(f, v, quote_strings))
                return false;
        }
        return true;
    }
    return false;
}

/* Write the commands deleting everything of VM name that the listing j shows: its map elements,
 * its TAPs in vm_ifs, its chains (unless keep[kind]: those are flushed and refilled by the caller).
 * *n: how many objects. */
static void emit_removal(FILE *f, json_t *j, const char *name, const bool *keep, size_t *n)
{
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(j, "nftables"), i, o)
    {
        json_t *m = json_object_get(o, "map");
        const char *mname = json_string_value(json_object_get(m, "name"));
        if (!mname)
            continue;
        bool ours = false, is_if = false;
        for (size_t k = 0; k < ELEMENTSOF(vm_maps); k++)
            if (streq(mname, vm_maps[k]))
                ours = true;
        if (!ours)
            continue;
        is_if = !streq(mname, "nat_src") && !streq(mname, "fwd_ports");
        size_t e;
        json_t *el;
        json_array_foreach(json_object_get(m, "elem"), e, el)
        {
            json_t *verdict = json_array_get(el, 1);
            const char *target =
                json_string_value(json_object_get(json_object_get(verdict, "jump"), "target"));
            if (!chain_of(target, name))
                continue;
            fprintf(f, "delete element " TABLE " %s { ", mname);
            if (!key_text(f, json_array_get(el, 0), is_if))
                fputs("\"?\"", f); /* fails the transaction, with libnftables' message */
            fputs(" }\n", f);
            (*n)++;
            if (streq(mname, "from_vm")) {
                fputs("delete element " TABLE " vm_ifs { ", f);
                (void)key_text(f, json_array_get(el, 0), true);
                fputs(" }\n", f);
            }
        }
    }
    json_array_foreach(json_object_get(j, "nftables"), i, o)
    {
        const char *chain = json_string_value(json_object_get(json_object_get(o, "chain"), "name"));
        int kind;
        const char *vm = chain ? chain_vm(chain, &kind) : NULL;
        if (!vm || !streq(vm, name) || (keep && keep[kind]))
            continue;
        fprintf(f, "flush chain " TABLE " %s\ndelete chain " TABLE " %s\n", chain, chain);
        (*n)++;
    }
}

/* Another VM already holding the TAP, the address or a forwarded host port of vm: the kernel would
 * refuse the transaction with "File exists" and no word of what or whose. */
static int check_conflicts(json_t *j, const fw_vm *vm, vmctl_error **reterr)
{
    char guest[16];
    format_ipv4(vm->guest_ip, guest, sizeof(guest));
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(j, "nftables"), i, o)
    {
        json_t *m = json_object_get(o, "map");
        const char *mname = json_string_value(json_object_get(m, "name"));
        if (!mname)
            continue;
        size_t e;
        json_t *el;
        json_array_foreach(json_object_get(m, "elem"), e, el)
        {
            const char *target = json_string_value(
                json_object_get(json_object_get(json_array_get(el, 1), "jump"), "target"));
            const char *owner = target ? chain_vm(target, NULL) : NULL;
            if (!owner || streq(owner, vm->name))
                continue;
            json_t *key = json_array_get(el, 0);
            const char *ks = json_string_value(key);
            if (streq(mname, "from_vm") && ks && streq(ks, vm->ifname)) {
                int r =
                    err_make(reterr, VMCTL_E_NETWORK_FIREWALL_FAILED, EEXIST,
                             "cannot install the firewall of VM '%s': TAP '%s' belongs to VM '%s'",
                             vm->name, vm->ifname, owner);
                err_detail(reterr, "holder", "%s", owner);
                return r;
            }
            if (streq(mname, "nat_src") && ks && streq(ks, guest)) {
                int r = err_make(reterr, VMCTL_E_NETWORK_FIREWALL_FAILED, EEXIST,
                                 "cannot install the firewall of VM '%s': address %s belongs to "
                                 "VM '%s'",
                                 vm->name, guest, owner);
                err_detail(reterr, "holder", "%s", owner);
                return r;
            }
            json_t *concat = json_object_get(key, "concat");
            if (streq(mname, "fwd_ports") && json_array_size(concat) == 2) {
                json_t *p = json_array_get(concat, 0);
                long long port = json_integer_value(json_array_get(concat, 1));
                int proto = json_is_string(p) ? (streq(json_string_value(p), "tcp")   ? IPPROTO_TCP
                                                 : streq(json_string_value(p), "udp") ? IPPROTO_UDP
                                                                                      : -1)
                                              : (int)json_integer_value(p);
                for (size_t k = 0; k < vm->n_fwd; k++)
                    if (vm->fwd[k].host_port == port && vm->fwd[k].proto == proto) {
                        int r =
                            err_make(reterr, VMCTL_E_NETWORK_FIREWALL_FAILED, EEXIST,
                                     "cannot install the firewall of VM '%s': host port "
                                     "%lld/%s is forwarded to VM '%s'",
                                     vm->name, port, proto == IPPROTO_TCP ? "tcp" : "udp", owner);
                        err_detail(reterr, "holder", "%s", owner);
                        return r;
                    }
            }
        }
    }
    return 0;
}

static void ip_text(uint32_t a, char *buf, size_t size)
{
    format_ipv4(a, buf, size);
}

/* The ranges a VM never reaches unless an allow entry inside one of them names it. */
static const struct {
    uint32_t addr;
    uint8_t prefix;
} private_ranges[] = {
    {0x0a000000, 8},  /* 10.0.0.0/8 */
    {0xac100000, 12}, /* 172.16.0.0/12 */
    {0xc0a80000, 16}, /* 192.168.0.0/16 */
    {0x64400000, 10}, /* 100.64.0.0/10 (carrier-grade NAT) */
    {0x7f000000, 8},  /* 127.0.0.0/8 */
    {0xa9fe0000, 16}, /* 169.254.0.0/16 (link-local: cloud metadata) */
};

static bool allow_is_private(const fw_allow *a)
{
    for (size_t i = 0; i < ELEMENTSOF(private_ranges); i++)
        if (a->prefix >= private_ranges[i].prefix &&
            (a->addr & prefix_mask(private_ranges[i].prefix)) == private_ranges[i].addr)
            return true;
    return false;
}

/* One anonymous set of allow entries (private or not, with ports or not) and its rule. */
static void emit_allow_rule(FILE *f, const char *chain, const fw_vm *vm, bool private, bool ports)
{
    bool any = false;
    for (size_t i = 0; i < vm->n_allow; i++) {
        const fw_allow *a = &vm->allow[i];
        bool has_ports = a->port_lo || a->proto;
        if (allow_is_private(a) != private || has_ports != ports)
            continue;
        char addr[16];
        ip_text(a->addr, addr, sizeof(addr));
        unsigned lo = a->port_lo ? a->port_lo : 0, hi = a->port_lo ? a->port_hi : 65535;
        for (int p = 0; p < 2; p++) {
            uint8_t proto = p == 0 ? IPPROTO_TCP : IPPROTO_UDP;
            if (ports && a->proto && a->proto != proto)
                continue;
            if (!any)
                fprintf(f, "add rule " TABLE " %s ip daddr %s{ ", chain,
                        ports ? ". meta l4proto . th dport " : "");
            else
                fputs(", ", f);
            any = true;
            if (!ports) {
                fprintf(f, "%s/%u", addr, a->prefix);
                break;
            }
            fprintf(f, "%s/%u . %s . %u-%u", addr, a->prefix, proto == IPPROTO_TCP ? "tcp" : "udp",
                    lo, hi);
        }
    }
    if (any)
        fprintf(f, " } accept comment \"vm %s: allow%s\"\n", vm->name,
                private ? " (private ranges)" : "");
}

static void emit_dns(FILE *f, const char *chain, const fw_vm *vm)
{
    if (!vm->allow_dns)
        return;
    fprintf(f, "add rule " TABLE " %s ", chain);
    if (vm->n_dns) {
        fputs("ip daddr { ", f);
        for (size_t i = 0; i < vm->n_dns; i++) {
            char a[16];
            ip_text(vm->dns[i], a, sizeof(a));
            fprintf(f, "%s%s", i ? ", " : "", a);
        }
        fputs(" } ", f);
    }
    fprintf(f, "meta l4proto { tcp, udp } th dport 53 accept comment \"vm %s: dns\"\n", vm->name);
}

/* The table, its sets and maps, and its base chains: created when missing, the base chains'
 * rules rewritten (the same every time), so every apply leaves the current version in place. */
static void emit_skeleton(FILE *f)
{
    fputs("add table " TABLE " { comment \"vm-manager: the firewall of TAP VMs\"; }\n"
          "add set " TABLE " vm_ifs { type ifname; comment \"every VM's TAP\"; }\n"
          "add set " TABLE " private { type ipv4_addr; flags interval; "
          "comment \"what a VM reaches only when an allow entry inside it names it\"; }\n"
          "flush set " TABLE " private\n"
          "add element " TABLE " private { ",
          f);
    for (size_t i = 0; i < ELEMENTSOF(private_ranges); i++) {
        char a[16];
        ip_text(private_ranges[i].addr, a, sizeof(a));
        fprintf(f, "%s%s/%u", i ? ", " : "", a, private_ranges[i].prefix);
    }
    fputs(" }\n"
          "add map " TABLE " from_vm { type ifname : verdict; comment \"a VM's TAP -> its egress "
          "chain out-NAME\"; }\n"
          "add map " TABLE " to_vm { type ifname : verdict; comment \"a VM's TAP -> its ingress "
          "chain in-NAME\"; }\n"
          "add map " TABLE " host_from_vm { type ifname : verdict; comment \"a VM's TAP -> what it "
          "may reach on the host, host-NAME\"; }\n"
          "add map " TABLE " nat_src { type ipv4_addr : verdict; comment \"a VM's address -> its "
          "masquerade chain nat-NAME\"; }\n"
          "add map " TABLE " fwd_ports { type inet_proto . inet_service : verdict; comment \"a "
          "forwarded host port -> the DNAT chain dnat-NAME of its VM\"; }\n"
          "add chain " TABLE " forward { type filter hook forward priority filter; policy accept; "
          "}\n"
          "flush chain " TABLE " forward\n"
          "add rule " TABLE " forward iifname vmap @from_vm\n"
          "add rule " TABLE " forward oifname vmap @to_vm\n"
          "add chain " TABLE " input { type filter hook input priority filter; policy accept; }\n"
          "flush chain " TABLE " input\n"
          "add rule " TABLE " input iifname vmap @host_from_vm\n"
          "add chain " TABLE " prerouting { type nat hook prerouting priority dstnat; policy "
          "accept; }\n"
          "flush chain " TABLE " prerouting\n"
          "add rule " TABLE " prerouting fib daddr type local meta l4proto . th dport vmap "
          "@fwd_ports\n"
          "add chain " TABLE " output { type nat hook output priority -100; policy accept; }\n"
          "flush chain " TABLE " output\n"
          "add rule " TABLE " output fib daddr type local meta l4proto . th dport vmap "
          "@fwd_ports\n"
          "add chain " TABLE " postrouting { type nat hook postrouting priority srcnat; policy "
          "accept; }\n"
          "flush chain " TABLE " postrouting\n"
          "add rule " TABLE " postrouting ip saddr vmap @nat_src\n"
          /* a forward reached from the host as 127.0.0.1:PORT: the guest cannot answer 127.0.0.1 */
          "add rule " TABLE " postrouting oifname @vm_ifs ip saddr 127.0.0.0/8 ct status dnat "
          "masquerade comment \"forwards reached from the host as 127.0.0.1\"\n",
          f);
}

static void emit_vm(FILE *f, const fw_vm *vm, bool need[_CH_MAX])
{
    const char *n = vm->name;
    char guest[16];
    ip_text(vm->guest_ip, guest, sizeof(guest));
    char ch[_CH_MAX][80];
    for (int k = 0; k < _CH_MAX; k++) {
        snprintf(ch[k], sizeof(ch[k]), "%s%s", vm_chain_prefixes[k], n);
        if (!need[k])
            continue;
        fprintf(f, "add chain " TABLE " %s { comment \"vm %s\"; }\nflush chain " TABLE " %s\n",
                ch[k], n, ch[k]);
    }

    /* egress: from the VM's TAP, forwarded */
    const char *o = ch[CH_OUT];
    fprintf(f,
            "add rule " TABLE " %s ct state established,related accept\n"
            "add rule " TABLE " %s ct state invalid drop\n"
            "add rule " TABLE " %s meta nfproto != ipv4 drop comment \"vm %s: IPv4 only\"\n"
            "add rule " TABLE " %s ip saddr != %s drop comment \"vm %s: its own address only\"\n"
            "add rule " TABLE " %s oifname @vm_ifs drop comment \"vm %s: no other VM\"\n",
            o, o, o, n, o, guest, n, o, n);
    emit_dns(f, o, vm);
    emit_allow_rule(f, o, vm, true, true);
    emit_allow_rule(f, o, vm, true, false);
    if (vm->allow_all)
        fprintf(f,
                "add rule " TABLE " %s ip daddr 169.254.0.0/16 reject with icmpx admin-prohibited "
                "comment \"vm %s: allow-all, but not link-local (metadata)\"\n"
                "add rule " TABLE " %s accept comment \"vm %s: allow-all\"\n",
                o, n, o, n);
    else {
        fprintf(f,
                "add rule " TABLE " %s ip daddr @private reject with icmpx admin-prohibited "
                "comment \"vm %s: private ranges\"\n",
                o, n);
        emit_allow_rule(f, o, vm, false, true);
        emit_allow_rule(f, o, vm, false, false);
        fprintf(f,
                "add rule " TABLE " %s counter reject with icmpx admin-prohibited comment \"vm "
                "%s: default deny\"\n",
                o, n);
    }

    /* ingress: forwarded to the VM's TAP */
    const char *in = ch[CH_IN];
    fprintf(f, "add rule " TABLE " %s ct state established,related accept\n", in);
    if (vm->n_fwd) {
        fprintf(f, "add rule " TABLE " %s ct status dnat ip daddr %s meta l4proto . th dport { ",
                in, guest);
        for (size_t i = 0; i < vm->n_fwd; i++)
            fprintf(f, "%s%s . %u", i ? ", " : "", vm->fwd[i].proto == IPPROTO_TCP ? "tcp" : "udp",
                    vm->fwd[i].guest_port);
        fprintf(f, " } accept comment \"vm %s: forwards\"\n", n);
    }
    fprintf(f, "add rule " TABLE " %s counter drop comment \"vm %s: default deny\"\n", in, n);

    /* the host's own addresses, from the VM's TAP */
    const char *h = ch[CH_HOST];
    /* after established: the replies of a forward reached as 127.0.0.1 are un-NATed to it */
    fprintf(f,
            "add rule " TABLE " %s ct state established,related accept\n"
            "add rule " TABLE " %s ip daddr 127.0.0.0/8 drop comment \"vm %s: not the host's "
            "loopback (route_localnet is on for forwards)\"\n",
            h, h, n);
    emit_dns(f, h, vm);
    fprintf(f, "add rule " TABLE " %s counter drop comment \"vm %s: not the host\"\n", h, n);

    /* masquerade: the VM's address, out of anything but a VM's TAP */
    fprintf(f, "add rule " TABLE " %s oifname != @vm_ifs ", ch[CH_NAT]);
    if (vm->uplink)
        fprintf(f, "oifname \"%s\" ", vm->uplink);
    fprintf(f, "masquerade comment \"vm %s\"\n", n);

    for (size_t i = 0; i < vm->n_fwd; i++) {
        const fw_forward *fw = &vm->fwd[i];
        fprintf(f,
                "add rule " TABLE " %s meta l4proto %s th dport %u dnat ip to %s:%u comment \"vm "
                "%s\"\n",
                ch[CH_DNAT], fw->proto == IPPROTO_TCP ? "tcp" : "udp", fw->host_port, guest,
                fw->guest_port, n);
    }

    fprintf(f,
            "add element " TABLE " vm_ifs { \"%s\" }\n"
            "add element " TABLE " from_vm { \"%s\" : jump %s }\n"
            "add element " TABLE " to_vm { \"%s\" : jump %s }\n"
            "add element " TABLE " host_from_vm { \"%s\" : jump %s }\n"
            "add element " TABLE " nat_src { %s : jump %s }\n",
            vm->ifname, vm->ifname, ch[CH_OUT], vm->ifname, ch[CH_IN], vm->ifname, ch[CH_HOST],
            guest, ch[CH_NAT]);
    if (vm->n_fwd) {
        fputs("add element " TABLE " fwd_ports { ", f);
        for (size_t i = 0; i < vm->n_fwd; i++)
            fprintf(f, "%s%s . %u : jump %s", i ? ", " : "",
                    vm->fwd[i].proto == IPPROTO_TCP ? "tcp" : "udp", vm->fwd[i].host_port,
                    ch[CH_DNAT]);
        fputs(" }\n", f);
    }
}

/* A forward reached from the host as 127.0.0.1:PORT is DNATed in the output hook to the guest
 * with source 127.0.0.1; the kernel routes such a packet out of the TAP only with route_localnet
 * on it (postrouting then masquerades the source to the TAP's address). Only the TAP: the host
 * chain of the VM drops 127.0.0.0/8 from it, so the guest does not reach the host's loopback
 * services through it. Best effort: a TAP that does not exist yet has no switch. */
static void set_route_localnet(const char *ifname)
{
    cleanup_free char *path = str_printf("/proc/sys/net/ipv4/conf/%s/route_localnet", ifname);
    if (!path)
        return;
    cleanup_close int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0)
        (void)!write(fd, "1", 1);
}

int fw_vm_apply(const fw_vm *vm, vmctl_error **reterr)
{
    int r = fw_vm_validate(vm, reterr);
    if (r < 0)
        return r;
    cleanup_nft nft_ctx *c = NULL;
    if ((r = fw_open(&c, reterr)) < 0)
        return r;
    json_t *j = NULL;
    if ((r = fw_load(c, LOAD_MAPS, &j, reterr)) < 0)
        return err_prefix(reterr, r, "while installing the firewall of VM '%s'", vm->name);

    if (j && (r = check_conflicts(j, vm, reterr)) < 0) {
        json_decref(j);
        return r;
    }
    /* every VM has all five chains (dnat-NAME empty without forwards): apply need not list them */
    bool need[_CH_MAX] = {true, true, true, true, true};
    char *cmds = NULL;
    size_t size = 0, n = 0;
    FILE *f = open_memstream(&cmds, &size);
    if (!f) {
        json_decref(j);
        return -ENOMEM;
    }
    emit_skeleton(f);
    /* the old elements (a TAP, an address or a forward may have changed) and the chains the VM
     * no longer needs go; the chains it keeps are flushed and refilled */
    emit_removal(f, j, vm->name, need, &n);
    json_decref(j);
    emit_vm(f, vm, need);
    if (fclose(f) != 0) {
        free(cmds);
        return -ENOMEM;
    }
    r = fw_run(c, cmds, reterr, "cannot install the firewall of VM '%s'", vm->name);
    free(cmds);
    if (r >= 0 && vm->n_fwd)
        set_route_localnet(vm->ifname);
    return r;
}

int fw_vm_remove(const char *name, vmctl_error **reterr)
{
    if (!name_is_valid(name))
        return invalid(reterr, "name", name ? name : "", "1-63 of [A-Za-z0-9_.-]",
                       "invalid VM name '%s' for the firewall", name ? name : "");
    cleanup_nft nft_ctx *c = NULL;
    int r = fw_open(&c, reterr);
    if (r < 0)
        return r;
    /* A removal racing another one of the same VM finds an object gone: list again and retry. */
    for (int attempt = 0;; attempt++) {
        json_t *j = NULL;
        if ((r = fw_load(c, LOAD_MAPS | LOAD_CHAINS, &j, reterr)) < 0)
            return err_prefix(reterr, r, "while removing the firewall of VM '%s'", name);
        if (!j)
            return 0;
        char *cmds = NULL;
        size_t size = 0, n = 0;
        FILE *f = open_memstream(&cmds, &size);
        if (!f) {
            json_decref(j);
            return -ENOMEM;
        }
        emit_removal(f, j, name, NULL, &n);
        json_decref(j);
        if (fclose(f) != 0) {
            free(cmds);
            return -ENOMEM;
        }
        if (n == 0) {
            free(cmds);
            return 0;
        }
        vmctl_error *e = NULL;
        r = fw_run(c, cmds, &e, "cannot remove the firewall of VM '%s'", name);
        free(cmds);
        if (r == -ENOENT && attempt < 2) {
            vmctl_error_free(e);
            continue;
        }
        if (r < 0 && reterr) {
            vmctl_error_free(*reterr);
            *reterr = e;
        } else
            vmctl_error_free(e);
        return r < 0 ? r : 0;
    }
}

int fw_list_vms(char ***ret, size_t *ret_n, vmctl_error **reterr)
{
    *ret = NULL;
    *ret_n = 0;
    cleanup_nft nft_ctx *c = NULL;
    int r = fw_open(&c, reterr);
    if (r < 0)
        return r;
    json_t *j = NULL;
    if ((r = fw_load(c, LOAD_CHAINS, &j, reterr)) < 0)
        return r;
    char **names = NULL;
    size_t n = 0, i;
    json_t *o;
    json_array_foreach(json_object_get(j, "nftables"), i, o)
    {
        const char *chain = json_string_value(json_object_get(json_object_get(o, "chain"), "name"));
        const char *vm = chain ? chain_vm(chain, NULL) : NULL;
        if (!vm)
            continue;
        bool seen = false;
        for (size_t k = 0; k < n; k++)
            if (streq(names[k], vm))
                seen = true;
        if (!seen && strv_push(&names, &n, vm) < 0) {
            strv_free(names);
            json_decref(j);
            return -ENOMEM;
        }
    }
    json_decref(j);
    *ret = names;
    *ret_n = n;
    return 0;
}

/* Elements of the anonymous sets inside a rule's expressions. */
static size_t anon_elements(json_t *v)
{
    size_t total = 0;
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x)
        {
            if (streq(k, "set") && json_is_array(x))
                total += json_array_size(x);
            else
                total += anon_elements(x);
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) total += anon_elements(x);
    }
    return total;
}

int fw_stats(size_t *ret_rules, size_t *ret_elements, vmctl_error **reterr)
{
    *ret_rules = *ret_elements = 0;
    cleanup_nft nft_ctx *c = NULL;
    int r = fw_open(&c, reterr);
    if (r < 0)
        return r;
    json_t *j = NULL;
    if ((r = fw_load(c, LOAD_TABLE, &j, reterr)) < 0 || !j)
        return r;
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(j, "nftables"), i, o)
    {
        json_t *rule = json_object_get(o, "rule");
        if (rule) {
            (*ret_rules)++;
            *ret_elements += anon_elements(json_object_get(rule, "expr"));
        }
        json_t *s =
            json_object_get(o, "set") ? json_object_get(o, "set") : json_object_get(o, "map");
        if (s)
            *ret_elements += json_array_size(json_object_get(s, "elem"));
    }
    json_decref(j);
    return 0;
}

int fw_table_remove(vmctl_error **reterr)
{
    cleanup_nft nft_ctx *c = NULL;
    int r = fw_open(&c, reterr);
    if (r < 0)
        return r;
    json_t *j = NULL;
    if ((r = fw_load(c, 0, &j, reterr)) < 0 || !j)
        return r;
    json_decref(j);
    r = fw_run(c, "delete table " TABLE, reterr, "cannot delete the nftables table '" TABLE "'");
    return r == -ENOENT ? 0 : r;
}
