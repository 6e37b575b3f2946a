/* SPDX-License-Identifier: MIT */
#include <inttypes.h>
#include <langinfo.h>
#include <locale.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <time.h>

#include "render.h"

static bool env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v;
}

/* Whether the locale's character set is UTF-8: the glyphs (cross, box drawing) need it, and off
 * it every byte above 0x7f is written as an escape. The locale is asked (setlocale +
 * nl_langinfo), then put back to "C" so nothing else in vmctl depends on it; a locale that is not
 * installed is judged by its name. No locale at all is "C": ASCII. */
static bool locale_is_utf8(void)
{
    const char *v = NULL;
    const char *names[] = {"LC_ALL", "LC_CTYPE", "LANG"};
    for (size_t i = 0; i < ELEMENTSOF(names) && !v; i++)
        if (env_nonempty(names[i]))
            v = getenv(names[i]);
    if (setlocale(LC_CTYPE, "")) {
        bool utf8 = streq(nl_langinfo(CODESET), "UTF-8");
        setlocale(LC_CTYPE, "C");
        return utf8;
    }
    return v && (strcasestr(v, "utf-8") || strcasestr(v, "utf8"));
}

static bool ascii_only;

void render_init(cli *c)
{
    bool no_color = env_nonempty("NO_COLOR");
    const char *term = getenv("TERM");
    bool dumb = term && streq(term, "dumb");
    c->color_err = !no_color && !dumb && isatty(STDERR_FILENO);
    c->color_out = !no_color && !dumb && isatty(STDOUT_FILENO);
    c->unicode = locale_is_utf8();
    ascii_only = !c->unicode;
}

/* --- text from elsewhere (the guest, the library, the user) --- */

/* Length of the valid UTF-8 sequence at p (at most len bytes), or 0. */
static size_t utf8_len(const unsigned char *p, size_t len, uint32_t *ret_cp)
{
    size_t n = p[0] < 0x80         ? 1
               : (p[0] >> 5) == 6  ? 2
               : (p[0] >> 4) == 14 ? 3
               : (p[0] >> 3) == 30 ? 4
                                   : 0;
    if (n == 0 || n > len)
        return 0;
    uint32_t cp = n == 1 ? p[0] : n == 2 ? p[0] & 0x1f : n == 3 ? p[0] & 0x0f : p[0] & 0x07;
    for (size_t k = 1; k < n; k++) {
        if ((p[k] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[k] & 0x3f);
    }
    static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    *ret_cp = cp;
    return n;
}

/* Code points that change what a terminal shows beyond their own glyph: C0 and C1 controls,
 * DEL, and the bidirectional overrides and isolates ("Trojan Source"). */
static bool cp_is_control(uint32_t cp)
{
    return cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f) ||
           (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

char *render_sanitize(const char *s)
{
    if (!s)
        return NULL;
    size_t len = strlen(s);
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f)
        return NULL;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        uint32_t cp = 0;
        size_t n = utf8_len(p + i, len - i, &cp);
        if (n == 1 && (cp == '\n' || cp == '\t')) {
            fputc((int)cp, f);
        } else if (n == 1 && cp == '\r' && p[i + 1] == '\n') {
            ; /* serial console logs end lines with CR LF */
        } else if (n == 0) {
            fprintf(f, "\\x%02x", p[i]);
            n = 1;
        } else if (cp_is_control(cp)) {
            if (cp == 0x1b)
                fputs("\\e", f);
            else if (cp == '\r')
                fputs("\\r", f);
            else if (cp < 0x80)
                fprintf(f, "\\x%02x", (unsigned)cp);
            else
                fprintf(f, "\\u{%04x}", (unsigned)cp);
        } else if (n > 1 && ascii_only) {
            for (size_t k = 0; k < n; k++)
                fprintf(f, "\\x%02x", p[i + k]);
        } else {
            fwrite(p + i, 1, n, f);
        }
        i += n;
    }
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* Glyphs of vmctl's own texts (help, summaries) and what they become off UTF-8. */
static const struct {
    const char *utf8, *ascii;
} glyphs[] = {
    {"\u2713", "ok"}, {"\u2717", "x"},  {"\u00d7", "x"},   {"\u2014", "-"},  {"\u2013", "-"},
    {"\u2192", "->"}, {"\u2190", "<-"}, {"\u2026", "..."}, {"\u2019", "'"},  {"\u2018", "'"},
    {"\u201c", "\""}, {"\u201d", "\""}, {"\u2502", "|"},   {"\u251c", "|"},  {"\u2570", "`"},
    {"\u2500", "-"},  {"\u25b6", ">"},  {"\u00a0", " "},   {"\u2265", ">="}, {"\u2264", "<="},
};

void render_fputs(const char *s, FILE *f)
{
    if (!ascii_only) {
        fputs(s, f);
        return;
    }
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        if (*p < 0x80) {
            fputc(*p++, f);
            continue;
        }
        size_t i = 0;
        while (i < ELEMENTSOF(glyphs) &&
               strncmp((const char *)p, glyphs[i].utf8, strlen(glyphs[i].utf8)) != 0)
            i++;
        if (i < ELEMENTSOF(glyphs)) {
            fputs(glyphs[i].ascii, f);
            p += strlen(glyphs[i].utf8);
        } else {
            fputc('?', f);
            p++;
            while ((*p & 0xc0) == 0x80)
                p++;
        }
    }
}

/* --- errors --- */

static bool json_printed;
int render_stdout_errno;

static json_t *detail_value_json(const char *value, int is_number)
{
    if (is_number) {
        char *end = NULL;
        errno = 0;
        long long ll = strtoll(value, &end, 10);
        if (errno == 0 && end != value && *end == '\0')
            return json_integer(ll);
        errno = 0;
        double d = strtod(value, &end);
        if (errno == 0 && end != value && *end == '\0')
            return json_real(d);
    }
    return json_string(value);
}

static json_t *str_or_null(const char *s)
{
    json_t *j = s ? json_string(s) : NULL;
    return j ? j : json_null();
}

/* "Permission denied (EACCES)" (caller frees), NULL when the error carries no errno. */
static char *cause_text(int err)
{
    if (err <= 0)
        return NULL;
    const char *name = strerrorname_np(err);
    return name ? cli_printf("%s (%s)", strerror(err), name) : cli_printf("%s", strerror(err));
}

json_t *render_error_json(const vmctl_error *e)
{
    json_t *details = json_object();
    for (size_t i = 0; i < vmctl_error_get_n_details(e); i++) {
        const char *k = NULL, *v = NULL;
        int num = 0;
        if (vmctl_error_get_detail(e, i, &k, &v, &num) >= 0 && k && v)
            json_object_set_new(details, k, detail_value_json(v, num));
    }
    json_t *notes = json_array();
    for (size_t i = 0; i < vmctl_error_get_n_notes(e); i++) {
        const char *n = vmctl_error_get_note(e, i);
        json_array_append_new(notes, render_json_bytes(n, strlen(n)));
    }
    json_t *context = json_array();
    for (size_t i = 0; i < vmctl_error_get_n_context(e); i++) {
        const char *n = vmctl_error_get_context(e, i);
        json_array_append_new(context, render_json_bytes(n, strlen(n)));
    }
    const char *msg = vmctl_error_get_message(e);
    int errnum = vmctl_error_get_errno(e);
    cleanup_free char *cause = cause_text(errnum);
    json_t *err = json_pack(
        "{s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "code", vmctl_error_get_code(e), "message",
        render_json_bytes(msg, strlen(msg)), "help", str_or_null(vmctl_error_get_help(e)),
        "details", details, "notes", notes, "context", context, "errno",
        errnum > 0 ? json_integer(errnum) : json_null(), "errno_name",
        str_or_null(errnum > 0 ? strerrorname_np(errnum) : NULL), "cause", str_or_null(cause));
    return json_pack("{s:o}", "error", err);
}

/* Print s, sanitized (render_sanitize), with every line after the first indented by indent
 * spaces. */
static void print_indented(FILE *f, const char *s, int indent)
{
    cleanup_free char *clean = render_sanitize(s);
    for (const char *p = clean ? clean : "?"; *p; p++) {
        fputc(*p, f);
        if (*p == '\n' && p[1])
            fprintf(f, "%*s", indent, "");
    }
}

int render_error(cli *c, vmctl_error *e)
{
    int code = vmctl_error_get_kind(e) == VMCTL_E_CLI_USAGE ? EXIT_USAGE : EXIT_ERROR;

    if (!e) {
        fprintf(stderr, "Error: out of memory\n");
        return EXIT_ERROR;
    }
    /* --json: the error is the one document on stdout, unless one was printed already (run
     * --rm whose cleanup failed after the command's result): then it goes to stderr as text. */
    if (c->json && !json_printed) {
        render_json(render_error_json(e));
        vmctl_error_free(e);
        return code;
    }

    render_clear_progress(c);
    bool col = c->color_err;
    const char *cross = c->unicode ? "\u00d7" : "x";
    const char *mid = c->unicode ? "\u251c\u2500\u25b6" : "|->";
    const char *last = c->unicode ? "\u2570\u2500\u25b6" : "`->";
    const char *bar = c->unicode ? "\u2502" : "|";

    fprintf(stderr, "Error: %s%s%s\n\n", col ? ANSI_RED ANSI_BOLD : "", vmctl_error_get_code(e),
            col ? ANSI_RESET : "");
    fprintf(stderr, "  %s%s%s ", col ? ANSI_RED : "", cross, col ? ANSI_RESET : "");
    print_indented(stderr, vmctl_error_get_message(e), 4);
    fputc('\n', stderr);

    size_t n_ctx = vmctl_error_get_n_context(e);
    for (size_t i = 0; i < n_ctx; i++) {
        fprintf(stderr, "  %s%s%s ", col ? ANSI_RED : "", i + 1 == n_ctx ? last : mid,
                col ? ANSI_RESET : "");
        print_indented(stderr, vmctl_error_get_context(e, i), 6);
        fputc('\n', stderr);
    }

    /* The message names what matters; the raw details are for -v (and --json). */
    size_t n_det = c->verbose ? vmctl_error_get_n_details(e) : 0;
    if (n_det > 0) {
        fprintf(stderr, "  %s%s%s ", col ? ANSI_DIM : "", bar, col ? ANSI_RESET : "");
        for (size_t i = 0; i < n_det; i++) {
            const char *k = NULL, *v = NULL;
            if (vmctl_error_get_detail(e, i, &k, &v, NULL) < 0)
                continue;
            fprintf(stderr, "%s%s", i ? ", " : "", col ? ANSI_DIM : "");
            print_indented(stderr, k, 4);
            fprintf(stderr, "=%s", col ? ANSI_RESET : "");
            print_indented(stderr, v, 4);
        }
        fputc('\n', stderr);
    }

    for (size_t i = 0; i < vmctl_error_get_n_notes(e); i++) {
        fprintf(stderr, "\n  %snote:%s ", col ? ANSI_BOLD : "", col ? ANSI_RESET : "");
        const char *note = vmctl_error_get_note(e, i);
        /* Notes are often multi-line logs (QEMU's stderr tail): indent them as a block. */
        if (strchr(note, '\n')) {
            fputs("\n    ", stderr);
            print_indented(stderr, note, 4);
            if (note[strlen(note) - 1] == '\n')
                continue;
        } else {
            print_indented(stderr, note, 4);
        }
        fputc('\n', stderr);
    }

    /* the cause last but for the help, once: not when the message says it already */
    int errnum = vmctl_error_get_cause_errno(e);
    if (errnum > 0) {
        cleanup_free char *cause = cause_text(errnum);
        fprintf(stderr, "\n  %scaused by:%s %s\n", col ? ANSI_BOLD : "", col ? ANSI_RESET : "",
                cause ? cause : "?");
    }

    const char *help = vmctl_error_get_help(e);
    if (help && *help) {
        fprintf(stderr, "\n  %shelp:%s ", col ? ANSI_CYAN : "", col ? ANSI_RESET : "");
        print_indented(stderr, help, 8);
        fputc('\n', stderr);
    }
    fflush(stderr);
    vmctl_error_free(e);
    return code;
}

int render_json(json_t *doc)
{
    json_printed = true;
    if (!doc) {
        fprintf(stderr, "Error: out of memory\n");
        return EXIT_ERROR;
    }
    /* One string, one write: json_dumpf writes token by token, which dominated `list --json`
     * with 1,000 VMs. */
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(doc);
    if (!text)
        return EXIT_ERROR;
    size_t len = strlen(text);
    text[len] = '\n';
    bool ok = fwrite(text, 1, len + 1, stdout) == len + 1;
    free(text);
    if (fflush(stdout) != 0 || !ok) {
        render_stdout_errno = errno;
        return EXIT_ERROR;
    }
    return EXIT_OK;
}

/* --- log messages and progress --- */

void render_clear_progress(cli *c)
{
    if (c->progress_active) {
        fputs("\r\033[K", stderr);
        c->progress_active = false;
    }
}

/* Whether this notice was already printed by this process (remembers the first 32). */
static bool notice_seen(const char *msg)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static uint64_t seen[32];
    static size_t n_seen;
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const char *p = msg; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    bool found = false;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < n_seen && !found; i++)
        found = seen[i] == h;
    if (!found && n_seen < sizeof(seen) / sizeof(seen[0]))
        seen[n_seen++] = h;
    pthread_mutex_unlock(&lock);
    return found;
}

void render_log(void *userdata, vmctl_log_level level, const char *msg)
{
    cli *c = userdata;
    const char *prefix;
    const char *color = NULL;

    switch (level) {
    case VMCTL_LOG_DEBUG:
        if (c->verbose < 1)
            return;
        prefix = "debug";
        color = ANSI_DIM;
        break;
    case VMCTL_LOG_INFO:
        if (c->verbose < 1)
            return;
        prefix = "info";
        color = ANSI_DIM;
        break;
    case VMCTL_LOG_NOTICE:
        if (notice_seen(msg))
            return; /* once per process: `up` creates several VMs, each would say it */
        prefix = "note";
        color = ANSI_CYAN;
        break;
    case VMCTL_LOG_WARNING:
    default:
        prefix = "warning";
        color = ANSI_YELLOW;
        break;
    }
    render_clear_progress(c);
    /* One line: a message with newlines keeps them, but ends with exactly one. */
    size_t len = strlen(msg);
    while (len > 0 && msg[len - 1] == '\n')
        len--;
    cleanup_free char *line = strndup(msg, len);
    fprintf(stderr, "%s%s:%s ", c->color_err ? color : "", prefix, c->color_err ? ANSI_RESET : "");
    print_indented(stderr, line ? line : msg, 0);
    fputc('\n', stderr);
    fflush(stderr);
}

/* --- values --- */

json_t *render_json_bytes(const char *data, size_t len)
{
    json_t *j = json_stringn(data, len);
    if (j)
        return j;
    /* Not valid UTF-8 (or embedded trouble): replace every invalid byte with U+FFFD. */
    char *buf = malloc(len * 3 + 1);
    if (!buf)
        return json_null();
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)data;
    size_t i = 0;
    while (i < len) {
        unsigned char b = p[i];
        size_t n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
        bool ok = n > 0 && i + n <= len;
        for (size_t k = 1; ok && k < n; k++)
            ok = (p[i + k] & 0xc0) == 0x80;
        if (ok && n > 1) {
            /* reject overlong forms and surrogates the cheap way: let jansson judge */
            json_t *t = json_stringn((const char *)p + i, n);
            ok = t != NULL;
            json_decref(t);
        }
        if (ok) {
            memcpy(buf + o, p + i, n);
            o += n;
            i += n;
        } else {
            memcpy(buf + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    j = json_stringn(buf, o);
    free(buf);
    return j ? j : json_null();
}

char *render_ports(const vmctl_port_forward *ports, size_t n)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f)
        return NULL;
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s%u->%u/%s", i ? ", " : "", ports[i].host_port, ports[i].guest_port,
                ports[i].udp ? "udp" : "tcp");
    fclose(f);
    return buf;
}

const char *render_size(uint64_t bytes, char *buf, size_t len)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    size_t u = 0;
    while (v >= 1024 && u + 1 < ELEMENTSOF(units)) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%" PRIu64 " B", bytes);
    else
        snprintf(buf, len, v < 10 ? "%.1f %s" : "%.0f %s", v, units[u]);
    return buf;
}

const char *render_age(int64_t t, char *buf, size_t len)
{
    if (t <= 0) {
        snprintf(buf, len, "-");
        return buf;
    }
    int64_t d = (int64_t)time(NULL) - t;
    if (d < 0)
        d = 0;
    if (d < 60)
        snprintf(buf, len, "%" PRId64 "s ago", d);
    else if (d < 3600)
        snprintf(buf, len, "%" PRId64 "m ago", d / 60);
    else if (d < 86400)
        snprintf(buf, len, "%" PRId64 "h ago", d / 3600);
    else
        snprintf(buf, len, "%" PRId64 "d ago", d / 86400);
    return buf;
}

/* --- VMs --- */

static bool vm_has_pid(const vmctl_vm_info *vm)
{
    return vm->pid > 0 && (vm->state == VMCTL_VM_RUNNING || vm->state == VMCTL_VM_PAUSED);
}

json_t *render_provision_json(const vmctl_vm_info *vm)
{
    json_t *p = json_object();
    json_object_set_new(p, "state",
                        json_string(vmctl_provision_state_to_string(vm->provision_state)));
    json_object_set_new(p, "step",
                        vm->provision_state == VMCTL_PROVISION_FAILED
                            ? json_integer(vm->provision_step)
                            : json_null());
    json_object_set_new(p, "error", str_or_null(vm->provision_error));
    json_object_set_new(p, "at",
                        vm->provisioned_at > 0 ? json_integer(vm->provisioned_at) : json_null());
    return p;
}

const char *render_provision(const vmctl_vm_info *vm, char *buf, size_t len)
{
    if (vm->provision_state == VMCTL_PROVISION_FAILED)
        snprintf(buf, len, "failed (step %u)", vm->provision_step);
    else if (vm->provision_state == VMCTL_PROVISION_NONE)
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, "%s", vmctl_provision_state_to_string(vm->provision_state));
    return buf;
}

/* --net tap: "all" or "deny, allow A, B, dns"; user: "unfiltered"; none: NULL (malloc'd). */
char *render_egress(const vmctl_vm_info *vm)
{
    if (streq(vm->net, "user"))
        return strdup("unfiltered (user-mode NAT)");
    if (!streq(vm->net, "tap"))
        return NULL;
    if (vm->allow_all)
        return strdup("all but the host and other VMs");
    size_t len = 64;
    for (char **a = vm->allow; a && *a; a++)
        len += strlen(*a) + 2;
    char *out = malloc(len);
    if (!out)
        return NULL;
    size_t k = (size_t)snprintf(out, len, "deny");
    const char *sep = ", allow ";
    for (char **a = vm->allow; a && *a; a++, sep = ", ")
        k += (size_t)snprintf(out + k, len - k, "%s%s", sep, *a);
    if (vm->allow_dns)
        snprintf(out + k, len - k, "%sdns", sep);
    return out;
}

static json_t *render_egress_json(const vmctl_vm_info *vm)
{
    if (streq(vm->net, "user"))
        return json_pack("{s:s}", "policy", "unfiltered");
    if (!streq(vm->net, "tap"))
        return json_null();
    json_t *allow = json_array();
    for (char **a = vm->allow; a && *a; a++)
        json_array_append_new(allow, json_string(*a));
    return json_pack("{s:s, s:o, s:b}", "policy", vm->allow_all ? "allow-all" : "deny", "allow",
                     allow, "dns", vm->allow_dns);
}

json_t *render_vm_json(const vmctl_vm_info *vm)
{
    json_t *o = json_object();
    json_t *ports = json_array();
    for (size_t i = 0; i < vm->n_ports; i++)
        json_array_append_new(ports,
                              json_pack("{s:i, s:i, s:s}", "host", (int)vm->ports[i].host_port,
                                        "guest", (int)vm->ports[i].guest_port, "protocol",
                                        vm->ports[i].udp ? "udp" : "tcp"));

    json_object_set_new(o, "name", str_or_null(vm->name));
    json_object_set_new(o, "state", str_or_null(vmctl_vm_state_to_string(vm->state)));
    json_object_set_new(o, "backend", str_or_null(vm->backend));
    json_object_set_new(o, "machine", str_or_null(vm->machine));
    json_object_set_new(o, "accel", str_or_null(vm->accel));
    json_object_set_new(o, "vcpus", json_integer(vm->vcpus));
    json_object_set_new(o, "memory_mib", json_integer(vm->memory_mib));
    json_object_set_new(o, "disk_gib", vm->disk_gib ? json_integer(vm->disk_gib) : json_null());
    json_object_set_new(o, "image", str_or_null(vm->image));
    json_object_set_new(o, "pid", vm_has_pid(vm) ? json_integer(vm->pid) : json_null());
    json_object_set_new(o, "cid", vm->cid ? json_integer(vm->cid) : json_null());
    json_object_set_new(o, "ports", ports);
    json_object_set_new(o, "dir", str_or_null(vm->dir));
    json_object_set_new(o, "net", str_or_null(vm->net));
    json_object_set_new(o, "ip", str_or_null(vm->ip));
    json_object_set_new(o, "mac", str_or_null(vm->mac));
    json_object_set_new(o, "egress", render_egress_json(vm));
    if (vm->ifname) {
        json_object_set_new(o, "gateway", str_or_null(vm->gateway));
        json_object_set_new(o, "tap", json_string(vm->ifname));
    }
    if (vm->rate_limit_mbps)
        json_object_set_new(o, "rate_limit_mbps", json_integer(vm->rate_limit_mbps));
    if (vm->disk_iops)
        json_object_set_new(o, "disk_iops", json_integer(vm->disk_iops));
    if (vm->created_at > 0)
        json_object_set_new(o, "created_at", json_integer(vm->created_at));
    if (vm->kernel)
        json_object_set_new(o, "kernel", json_string(vm->kernel));
    if (vm->initrd)
        json_object_set_new(o, "initrd", json_string(vm->initrd));
    if (vm->cmdline)
        json_object_set_new(o, "cmdline", json_string(vm->cmdline));
    if (vm->env && vm->env[0]) {
        json_t *env = json_array();
        for (char **e = vm->env; *e; e++)
            json_array_append_new(env, json_string(*e));
        json_object_set_new(o, "env", env);
    }
    if (vm->paused_by) {
        json_object_set_new(o, "paused_by", json_string(vm->paused_by));
        json_object_set_new(o, "pause_cause", str_or_null(vm->pause_cause));
    }
    if (vm->crash_note)
        json_object_set_new(o, "crash_note",
                            render_json_bytes(vm->crash_note, strlen(vm->crash_note)));
    json_object_set_new(o, "project", str_or_null(vm->project));
    json_object_set_new(o, "provision", render_provision_json(vm));
    /* docs/isolation.md: what the VM is made with, and what its running hypervisor is under */
    json_t *unenforced = json_array();
    static const struct {
        unsigned bit;
        const char *name;
    } limits[] = {{VMCTL_LIMIT_CPU, "cpu_quota"},
                  {VMCTL_LIMIT_MEMORY, "memory"},
                  {VMCTL_LIMIT_PIDS, "pids"},
                  {VMCTL_LIMIT_IO, "io_weight"}};
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++)
        if (vm->limits_unenforced & limits[i].bit)
            json_array_append_new(unenforced, json_string(limits[i].name));
    json_object_set_new(
        o, "jail",
        json_pack(
            "{s:b, s:b, s:o, s:o, s:o, s:s, s:o, s:o, s:o, s:o}", "enabled", vm->jail, "jailed",
            vm->jailed, "uid", vm->jail_uid ? json_integer(vm->jail_uid) : json_null(), "cgroup",
            vm->cgroup ? json_string(vm->cgroup) : json_null(), "cgroup_version",
            vm->cgroup_version ? json_integer(vm->cgroup_version) : json_null(), "sandbox",
            vm->jailed ? "on" : "off", "cpu_quota",
            vm->cpu_quota > 0 ? json_real(vm->cpu_quota) : json_null(), "memory_limit",
            vm->memory_limit ? json_integer((json_int_t)vm->memory_limit) : json_null(),
            "pids_limit", vm->pids_limit ? json_integer((json_int_t)vm->pids_limit) : json_null(),
            "unenforced", unenforced));
    return o;
}

void render_vm_status(cli *c, const vmctl_vm_info *vm)
{
    char buf[64], age[32];
    cleanup_free char *ports = render_ports(vm->ports, vm->n_ports);
    const char *keys[32], *vals[32];
    char vcpus[16], mem[32], disk[32], pid[24], created[80], prov[64];
    size_t n = 0;

#define KV(k, v)                                                                                   \
    do {                                                                                           \
        keys[n] = (k);                                                                             \
        vals[n] = (v);                                                                             \
        n++;                                                                                       \
    } while (0)

    snprintf(vcpus, sizeof(vcpus), "%u", vm->vcpus);
    snprintf(mem, sizeof(mem), "%u MiB", vm->memory_mib);
    if (vm->disk_gib)
        snprintf(disk, sizeof(disk), "%u GiB", vm->disk_gib);
    else
        snprintf(disk, sizeof(disk), "-");
    if (vm_has_pid(vm))
        snprintf(pid, sizeof(pid), "%d", (int)vm->pid);
    else
        snprintf(pid, sizeof(pid), "-");
    if (vm->created_at > 0) {
        time_t t = (time_t)vm->created_at;
        struct tm tm;
        localtime_r(&t, &tm);
        strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
        snprintf(created, sizeof(created), "%s (%s)", buf, render_age(vm->created_at, age, 32));
    } else {
        snprintf(created, sizeof(created), "-");
    }

    KV("name", vm->name);
    KV("state", vmctl_vm_state_to_string(vm->state));
    char paused[256];
    if (vm->paused_by) {
        snprintf(paused, sizeof(paused), "%s (%s)", vm->paused_by,
                 vm->pause_cause ? vm->pause_cause : "?");
        KV("paused by", paused);
    }
    KV("backend", vm->backend);
    KV("machine", vm->machine);
    KV("accel", vm->accel);
    KV("vcpus", vcpus);
    KV("memory", mem);
    KV("disk", disk);
    KV("image", vm->image);
    if (vm->kernel)
        KV("kernel", vm->kernel);
    if (vm->initrd)
        KV("initrd", vm->initrd);
    if (vm->cmdline)
        KV("cmdline", vm->cmdline);
    KV("net", vm->net);
    cleanup_free char *egress = render_egress(vm);
    char ip[64], limits[64];
    if (vm->ip) {
        snprintf(ip, sizeof(ip), "%s via %s (%s)", vm->ip, vm->gateway ? vm->gateway : "?",
                 vm->ifname ? vm->ifname : "?");
        KV("ip", ip);
        KV("mac", vm->mac);
    }
    if (egress)
        KV("egress", egress);
    if (vm->rate_limit_mbps || vm->disk_iops) {
        char a[32] = "", b[32] = "";
        if (vm->rate_limit_mbps)
            snprintf(a, sizeof(a), "%u Mbit/s to the guest", vm->rate_limit_mbps);
        if (vm->disk_iops)
            snprintf(b, sizeof(b), "%u disk IOPS", vm->disk_iops);
        snprintf(limits, sizeof(limits), "%s%s%s", a, *a && *b ? ", " : "", b);
        KV("limits", limits);
    }
    KV("ports", ports && *ports ? ports : "-");
    KV("pid", pid);
    KV("dir", vm->dir);
    KV("created", created);
    KV("project", vm->project ? vm->project : "- (made by hand)");
    KV("provision", render_provision(vm, prov, sizeof(prov)));
    if (vm->provision_error)
        KV("provision error", vm->provision_error);
    char jailbuf[320];
    if (vm->jailed) {
        unsigned u = vm->limits_unenforced;
        char missing[96] = "";
        static const struct {
            unsigned bit;
            const char *what;
        } lim[] = {{VMCTL_LIMIT_CPU, "cpu quota"},
                   {VMCTL_LIMIT_MEMORY, "memory ceiling"},
                   {VMCTL_LIMIT_PIDS, "pids ceiling"},
                   {VMCTL_LIMIT_IO, "disk I/O weight"}};
        for (size_t i = 0; i < sizeof(lim) / sizeof(lim[0]); i++)
            if (u & lim[i].bit)
                snprintf(missing + strlen(missing), sizeof(missing) - strlen(missing), "%s%s",
                         *missing ? ", " : "; not enforced here: ", lim[i].what);
        snprintf(jailbuf, sizeof(jailbuf), "uid %u, cgroup %s, seccomp sandbox%s", vm->jail_uid,
                 vm->cgroup ? vm->cgroup : "-", missing);
    } else
        snprintf(jailbuf, sizeof(jailbuf), "%s",
                 !vm->jail        ? "off (--no-jail)"
                 : vm_has_pid(vm) ? "off (vmctl not root, or VMCTL_NO_JAIL)"
                                  : "on at start (as root)");
    KV("jail", jailbuf);
#undef KV

    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        if (strlen(keys[i]) > w)
            w = strlen(keys[i]);
    for (size_t i = 0; i < n; i++) {
        cleanup_free char *clean = render_sanitize(vals[i] ? vals[i] : "-");
        const char *v = clean ? clean : "?";
        if (c->color_out && streq(keys[i], "state")) {
            const char *col = vm->state == VMCTL_VM_RUNNING   ? ANSI_GREEN
                              : vm->state == VMCTL_VM_CRASHED ? ANSI_RED
                              : vm->state == VMCTL_VM_PAUSED  ? ANSI_YELLOW
                                                              : "";
            printf("%s:%*s %s%s%s\n", keys[i], (int)(w - strlen(keys[i])), "", col, v, ANSI_RESET);
        } else {
            printf("%s:%*s %s\n", keys[i], (int)(w - strlen(keys[i])), "", v);
        }
    }
    if (vm->crash_note && *vm->crash_note) {
        printf("crash note:\n    ");
        print_indented(stdout, vm->crash_note, 4);
        if (vm->crash_note[strlen(vm->crash_note) - 1] != '\n')
            putchar('\n');
    }
}

/* --- tables --- */

struct table {
    size_t n_columns;
    char **cells; /* row-major, header first */
    size_t n_cells;
};

size_t render_width(const char *s)
{
    size_t w = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p & 0xc0) != 0x80)
            w++;
    return w;
}

static void table_push(table *t, const char *s)
{
    char **n = realloc(t->cells, sizeof(char *) * (t->n_cells + 1));
    if (!n)
        return;
    t->cells = n;
    t->cells[t->n_cells] = render_sanitize(s ? s : "-");
    if (t->cells[t->n_cells])
        t->n_cells++;
}

table *table_new(size_t n_columns, ...)
{
    table *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->n_columns = n_columns;
    va_list ap;
    va_start(ap, n_columns);
    for (size_t i = 0; i < n_columns; i++)
        table_push(t, va_arg(ap, const char *));
    va_end(ap);
    return t;
}

void table_add_row(table *t, ...)
{
    if (!t)
        return;
    va_list ap;
    va_start(ap, t);
    for (size_t i = 0; i < t->n_columns; i++)
        table_push(t, va_arg(ap, const char *));
    va_end(ap);
}

void table_print(table *t, FILE *f)
{
    if (!t || t->n_columns == 0)
        return;
    size_t *w = calloc(t->n_columns, sizeof(size_t));
    if (!w)
        return;
    for (size_t i = 0; i < t->n_cells; i++) {
        size_t cw = render_width(t->cells[i]);
        if (cw > w[i % t->n_columns])
            w[i % t->n_columns] = cw;
    }
    for (size_t i = 0; i < t->n_cells; i++) {
        size_t col = i % t->n_columns;
        bool last = col + 1 == t->n_columns;
        fputs(t->cells[i], f);
        if (last)
            fputc('\n', f);
        else
            fprintf(f, "%*s", (int)(w[col] - render_width(t->cells[i]) + 2), "");
    }
    free(w);
}

void table_free(table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n_cells; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
}

json_t *render_pool_json(const vmctl_pool_info *p)
{
    json_t *m = json_array();
    for (size_t i = 0; p->members && p->members[i]; i++)
        json_array_append_new(m, json_string(p->members[i]));
    return json_pack("{s:s, s:s, s:I, s:I, s:o, s:o}", "vm", p->vm, "snapshot", p->snap, "size",
                     (json_int_t)p->size, "ready", (json_int_t)p->ready, "members", m, "project",
                     p->project ? json_string(p->project) : json_null());
}

json_t *render_pool_one_json(vmctl_pool_info **list, size_t n, const char *vm, const char *snap)
{
    for (size_t i = 0; i < n; i++)
        if (streq(list[i]->vm, vm) && streq(list[i]->snap, snap))
            return render_pool_json(list[i]);
    return json_object();
}
