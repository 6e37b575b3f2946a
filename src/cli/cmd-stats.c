/* SPDX-License-Identifier: MIT */
/* vmctl stats [NAME...] [--json | --prometheus] [--watch] [--interval S]: CPU, memory, disk,
 * network and guest statistics of VMs (vmctl/stats.h), as a table, JSON or Prometheus text. */
#include <time.h>

#include "cli.h"
#include "render.h"

const char cmd_stats_help[] =
    "Usage: vmctl stats [NAME...] [--json | --prometheus] [--watch] [--interval S] [--no-guest]\n"
    "\n"
    "Show the statistics of VMs (all running and paused ones when no NAME is given): the host\n"
    "CPU share and time of each VM's QEMU process, its memory (RSS, and PSS, which counts the\n"
    "pages it shares with other processes by share), disk bytes read and written, network bytes\n"
    "received and sent (of its TAP devices; user-mode networking has none on the host, so\n"
    "there the guest's own counts are shown, marked \"(guest)\"), the guest's own memory use\n"
    "and load (from its agent) and the uptime.\n"
    "\n"
    "CPU% is the share of one host CPU over an interval: the table samples twice, 1 s apart (or\n"
    "--interval); --json samples once and leaves cpu.percent null unless --interval is given.\n"
    "A source that cannot be read is shown as '-' with a vm_manager::metrics::failed error\n"
    "naming it (on stderr; with --json in the VM's \"errors\"); the other values are still shown\n"
    "and the exit status is 1.\n"
    "\n"
    "Options:\n"
    "  -w, --watch          redraw the table every interval until Ctrl-C\n"
    "      --interval S     the interval of --watch and of CPU% (default 2 s with --watch)\n"
    "      --no-guest       do not ask the guest agents (no GUEST MEM and LOAD): cheaper\n"
    "      --prometheus     the Prometheus text format (vmctl_vm_* metrics, counters and\n"
    "                       gauges in seconds and bytes), for node_exporter's textfile collector\n"
    "  -h, --help           show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl stats\n"
    "  vmctl stats web --watch\n"
    "  vmctl stats --json | jq '.[] | {name, rss: .memory.rss_bytes}'\n"
    "  vmctl stats --prometheus > /var/lib/node_exporter/vmctl.prom.$$ &&\n"
    "    mv /var/lib/node_exporter/vmctl.prom.$$ /var/lib/node_exporter/vmctl.prom\n";

enum {
    OPT_INTERVAL = 0x100,
    OPT_PROMETHEUS,
    OPT_NO_GUEST,
};

/* vmctl_vm_stats_get flags of every full sample (--no-guest) */
static unsigned sample_flags;

/* One VM of a sample: its statistics, or the error that kept it from being looked up. */
typedef struct row {
    char *name;
    vmctl_vm_stats *st;
    vmctl_error *err;
    double cpu_percent; /* < 0: unknown */
} row;

typedef struct sample {
    row *rows;
    size_t n;
} sample;

static void sample_clear(sample *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->rows[i].name);
        vmctl_vm_stats_free(s->rows[i].st);
        vmctl_error_free(s->rows[i].err);
    }
    free(s->rows);
    *s = (sample){0};
}

/* The names to sample: those given, or every running or paused VM. */
static int list_names(cli *c, vmctl_ctx *ctx, char ***ret, size_t *ret_n)
{
    char **names = NULL;
    size_t n = 0;
    if (c->n_args > 0) {
        names = calloc(c->n_args, sizeof(*names));
        for (size_t i = 0; names && i < c->n_args; i++)
            if ((names[n] = strdup(c->args[i])))
                n++;
    } else {
        vmctl_vm_info **vms = NULL;
        size_t nv = 0;
        vmctl_error *e = NULL;
        if (vmctl_vm_list(ctx, &vms, &nv, &e) < 0)
            return render_error(c, e);
        names = calloc(nv + 1, sizeof(*names));
        for (size_t i = 0; names && i < nv; i++)
            if (vms[i]->state == VMCTL_VM_RUNNING || vms[i]->state == VMCTL_VM_PAUSED)
                if ((names[n] = strdup(vms[i]->name)))
                    n++;
        vmctl_vm_info_list_free(vms, nv);
    }
    if (!names) {
        fprintf(stderr, "vmctl: out of memory\n");
        return EXIT_ERROR;
    }
    *ret = names;
    *ret_n = n;
    return EXIT_OK;
}

static void names_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static int take_sample(vmctl_ctx *ctx, char **names, size_t n, unsigned flags, sample *ret)
{
    *ret = (sample){.rows = calloc(n + 1, sizeof(row))};
    if (!ret->rows)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        row *r = &ret->rows[ret->n++];
        r->cpu_percent = -1;
        if (!(r->name = strdup(names[i])))
            return -ENOMEM;
        if (vmctl_vm_stats_get(ctx, names[i], flags, &r->st, &r->err) < 0 && !r->err)
            return -ENOMEM;
    }
    return 0;
}

/* cpu_percent of cur's rows from the rows of the same VMs in prev. */
static void rates(const sample *prev, sample *cur)
{
    for (size_t i = 0; i < cur->n; i++)
        for (size_t j = 0; j < prev->n; j++)
            if (cur->rows[i].st && prev->rows[j].st && streq(cur->rows[i].name, prev->rows[j].name))
                cur->rows[i].cpu_percent =
                    vmctl_vm_stats_cpu_percent(prev->rows[j].st, cur->rows[i].st);
}

/* Sleep until deadline (CLOCK_MONOTONIC seconds) or a signal. */
static void sleep_until(double deadline)
{
    while (!cli_interrupted) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double left = deadline - ((double)now.tv_sec + (double)now.tv_nsec / 1e9);
        if (left <= 0)
            return;
        struct timespec ts = {.tv_sec = (time_t)left,
                              .tv_nsec = (long)((left - (double)(time_t)left) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

static double mono_now(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

/* A sample whose CPU% covers the interval: a CPU-only sample, interval, the full sample. */
static int take_sample_with_rate(vmctl_ctx *ctx, char **names, size_t n, double interval,
                                 sample *ret)
{
    sample first = {0};
    double t0 = mono_now();
    int r = take_sample(ctx, names, n, VMCTL_STATS_CPU_ONLY, &first);
    if (r >= 0) {
        sleep_until(t0 + interval);
        r = take_sample(ctx, names, n, sample_flags, ret);
    }
    if (r >= 0)
        rates(&first, ret);
    sample_clear(&first);
    return r;
}

/* --- JSON --- */

static json_t *num_or_null(bool avail, double v)
{
    return avail ? json_real(v) : json_null();
}

static json_t *int_or_null(bool avail, uint64_t v)
{
    return avail ? json_integer((json_int_t)v) : json_null();
}

static json_t *why_or_null(const vmctl_vm_stats *s, vmctl_stats_source src)
{
    const char *w = s->available[src] ? NULL : s->why_unavailable[src];
    return w ? json_string(w) : json_null();
}

static json_t *nets_json(const vmctl_vm_stats_net *n, size_t count)
{
    json_t *a = json_array();
    for (size_t i = 0; i < count; i++)
        json_array_append_new(a, json_pack("{s:s, s:I, s:I, s:I, s:I}", "interface", n[i].interface,
                                           "rx_bytes", (json_int_t)n[i].rx_bytes, "tx_bytes",
                                           (json_int_t)n[i].tx_bytes, "rx_packets",
                                           (json_int_t)n[i].rx_packets, "tx_packets",
                                           (json_int_t)n[i].tx_packets));
    return a;
}

static json_t *row_json(const row *r)
{
    json_t *errors = json_array();
    if (r->err) {
        json_t *doc = render_error_json(r->err);
        json_array_append(errors, json_object_get(doc, "error"));
        json_decref(doc);
    }
    const vmctl_vm_stats *s = r->st;
    if (!s)
        return json_pack("{s:s, s:n, s:o}", "name", r->name, "state", "errors", errors);
    for (size_t i = 0; i < s->n_errors; i++) {
        json_t *doc = render_error_json(s->errors[i]);
        json_array_append(errors, json_object_get(doc, "error"));
        json_decref(doc);
    }
    const bool *a = s->available;
    json_t *disks = json_array();
    for (size_t i = 0; i < s->n_disks; i++)
        json_array_append_new(disks,
                              json_pack("{s:s, s:I, s:I, s:I, s:I}", "device", s->disks[i].device,
                                        "read_bytes", (json_int_t)s->disks[i].read_bytes,
                                        "write_bytes", (json_int_t)s->disks[i].write_bytes,
                                        "read_ops", (json_int_t)s->disks[i].read_ops, "write_ops",
                                        (json_int_t)s->disks[i].write_ops));
    json_t *nets = nets_json(s->nets, s->n_nets);
    json_t *gnets = nets_json(s->guest_nets, s->n_guest_nets);
    bool g = a[VMCTL_STATS_GUEST];
    json_t *load = g ? json_pack("[f, f, f]", s->guest_load[0], s->guest_load[1], s->guest_load[2])
                     : json_null();
    json_t *o = json_pack("{s:s, s:s, s:o, s:i, s:I,"
                          " s:{s:b, s:o, s:o, s:o, s:o},"
                          " s:{s:b, s:o, s:o},"
                          " s:{s:b, s:o},"
                          " s:{s:b, s:o},"
                          " s:{s:b, s:o, s:o},"
                          " s:{s:b, s:o, s:o, s:o, s:o, s:o},"
                          " s:{s:b, s:o, s:o},"
                          " s:o}",
                          "name", s->name, "state", vmctl_vm_state_to_string(s->state), "pid",
                          s->pid > 0 ? json_integer(s->pid) : json_null(), "vcpus", (int)s->vcpus,
                          "memory_bytes", (json_int_t)s->mem_bytes,
                          /* cpu */
                          "cpu", "available", a[VMCTL_STATS_CPU], "seconds",
                          num_or_null(a[VMCTL_STATS_CPU], s->cpu_seconds), "user_seconds",
                          num_or_null(a[VMCTL_STATS_CPU], s->cpu_user_seconds), "system_seconds",
                          num_or_null(a[VMCTL_STATS_CPU], s->cpu_system_seconds), "percent",
                          num_or_null(r->cpu_percent >= 0, r->cpu_percent),
                          /* memory */
                          "memory", "available", a[VMCTL_STATS_MEMORY], "rss_bytes",
                          int_or_null(a[VMCTL_STATS_MEMORY], s->rss_bytes), "pss_bytes",
                          int_or_null(a[VMCTL_STATS_MEMORY], s->pss_bytes),
                          /* uptime */
                          "uptime", "available", a[VMCTL_STATS_UPTIME], "seconds",
                          num_or_null(a[VMCTL_STATS_UPTIME], s->uptime_seconds),
                          /* disk */
                          "disk", "available", a[VMCTL_STATS_DISK], "devices", disks,
                          /* network */
                          "network", "available", a[VMCTL_STATS_NETWORK], "reason",
                          why_or_null(s, VMCTL_STATS_NETWORK), "interfaces", nets,
                          /* guest */
                          "guest", "available", g, "reason", why_or_null(s, VMCTL_STATS_GUEST),
                          "mem_total_bytes", int_or_null(g, s->guest_mem_total_bytes),
                          "mem_available_bytes", int_or_null(g, s->guest_mem_available_bytes),
                          "load", load, "uptime_seconds", num_or_null(g, s->guest_uptime_seconds),
                          /* guest_network */
                          "guest_network", "available", a[VMCTL_STATS_GUEST_NETWORK], "reason",
                          why_or_null(s, VMCTL_STATS_GUEST_NETWORK), "interfaces", gnets,
                          /* errors */
                          "errors", errors);
    /* cgroup: the jailed VM's group, each field null where the host has no controller */
    bool c = a[VMCTL_STATS_CGROUP], cm = c && s->cgroup_have_memory, cp = c && s->cgroup_have_pids;
    json_object_set_new(
        o, "cgroup",
        json_pack("{s:b, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "available", c, "reason",
                  why_or_null(s, VMCTL_STATS_CGROUP), "version",
                  c ? json_integer(s->cgroup_version) : json_null(), "cpu_seconds",
                  num_or_null(c, s->cgroup_cpu_seconds), "memory_bytes",
                  int_or_null(cm, s->cgroup_memory_bytes), "memory_limit_bytes",
                  int_or_null(cm && s->cgroup_memory_limit_bytes, s->cgroup_memory_limit_bytes),
                  "oom_kills", int_or_null(cm, s->cgroup_oom_kills), "tasks",
                  int_or_null(cp, s->cgroup_pids), "tasks_limit",
                  int_or_null(cp && s->cgroup_pids_limit, s->cgroup_pids_limit)));
    return o;
}

json_t *render_stats_json(const char *name, vmctl_vm_stats *st, vmctl_error *err)
{
    row r = {.name = (char *)name, .st = st, .err = err, .cpu_percent = -1};
    return row_json(&r);
}

/* --- the table --- */

static const char *fmt_duration(double sec, char *buf, size_t len)
{
    unsigned long s = (unsigned long)sec;
    if (s < 60)
        snprintf(buf, len, "%lus", s);
    else if (s < 3600)
        snprintf(buf, len, "%lum%02lus", s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, len, "%luh%02lum", s / 3600, s / 60 % 60);
    else
        snprintf(buf, len, "%lud%02luh", s / 86400, s / 3600 % 24);
    return buf;
}

static const char *pair(uint64_t a, uint64_t b, char *buf, size_t len)
{
    char x[32], y[32];
    snprintf(buf, len, "%s / %s", render_size(a, x, sizeof(x)), render_size(b, y, sizeof(y)));
    return buf;
}

static table *make_table(const sample *s)
{
    table *t = table_new(10, "NAME", "CPU%", "MEM(RSS)", "PSS", "DISK R/W", "NET RX/TX",
                         "GUEST MEM", "LOAD", "UPTIME", "STATE");
    for (size_t i = 0; i < s->n; i++) {
        const row *r = &s->rows[i];
        const vmctl_vm_stats *st = r->st;
        if (!st) {
            table_add_row(t, r->name, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
            continue;
        }
        const bool *a = st->available;
        char cpu[32], rss[32], pss[32], disk[80], net[80], gmem[80], load[32], up[32];
        snprintf(cpu, sizeof(cpu), "%.1f%%", r->cpu_percent);
        uint64_t rb = 0, wb = 0, rx = 0, tx = 0;
        for (size_t j = 0; j < st->n_disks; j++) {
            rb += st->disks[j].read_bytes;
            wb += st->disks[j].write_bytes;
        }
        for (size_t j = 0; j < st->n_nets; j++) {
            rx += st->nets[j].rx_bytes;
            tx += st->nets[j].tx_bytes;
        }
        /* user-mode networking: the guest's own counters, marked as such */
        bool guest_net = !a[VMCTL_STATS_NETWORK] && a[VMCTL_STATS_GUEST_NETWORK];
        for (size_t j = 0; guest_net && j < st->n_guest_nets; j++) {
            rx += st->guest_nets[j].rx_bytes;
            tx += st->guest_nets[j].tx_bytes;
        }
        bool have_net = a[VMCTL_STATS_NETWORK] ? st->n_nets > 0 : guest_net && st->n_guest_nets;
        if (have_net) {
            pair(rx, tx, net, sizeof(net));
            if (guest_net)
                strncat(net, " (guest)", sizeof(net) - strlen(net) - 1);
        }
        snprintf(load, sizeof(load), "%.2f", st->guest_load[0]);
        table_add_row(
            t, st->name, r->cpu_percent >= 0 ? cpu : NULL,
            a[VMCTL_STATS_MEMORY] ? render_size(st->rss_bytes, rss, sizeof(rss)) : NULL,
            a[VMCTL_STATS_MEMORY] ? render_size(st->pss_bytes, pss, sizeof(pss)) : NULL,
            a[VMCTL_STATS_DISK] && st->n_disks ? pair(rb, wb, disk, sizeof(disk)) : NULL,
            have_net ? net : NULL,
            a[VMCTL_STATS_GUEST] ? pair(st->guest_mem_total_bytes - st->guest_mem_available_bytes,
                                        st->guest_mem_total_bytes, gmem, sizeof(gmem))
                                 : NULL,
            a[VMCTL_STATS_GUEST] ? load : NULL,
            a[VMCTL_STATS_UPTIME] ? fmt_duration(st->uptime_seconds, up, sizeof(up)) : NULL,
            vmctl_vm_state_to_string(st->state));
    }
    return t;
}

static size_t count_errors(const sample *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++)
        n += (s->rows[i].err ? 1 : 0) + (s->rows[i].st ? s->rows[i].st->n_errors : 0);
    return n;
}

/* The errors of a sample rendered on stderr (and taken out of it). */
static void render_errors(cli *c, sample *s)
{
    for (size_t i = 0; i < s->n; i++) {
        if (s->rows[i].err)
            render_error(c, TAKE_PTR(s->rows[i].err));
        vmctl_vm_stats *st = s->rows[i].st;
        for (size_t j = 0; st && j < st->n_errors; j++)
            render_error(c, TAKE_PTR(st->errors[j]));
    }
}

/* One frame of --watch on a terminal: home, the table with each line cleared to its end, the
 * errors in one line each, and the rest of the screen cleared. */
static void draw_frame(const sample *s, bool tty, bool first)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m)
        return;
    table *t = make_table(s);
    table_print(t, m);
    table_free(t);
    for (size_t i = 0; i < s->n; i++) {
        const row *r = &s->rows[i];
        if (r->err) {
            cleanup_free char *msg = render_sanitize(vmctl_error_get_message(r->err));
            fprintf(m, "%s: %s\n", vmctl_error_get_code(r->err), msg ? msg : "?");
        }
        for (size_t j = 0; r->st && j < r->st->n_errors; j++) {
            cleanup_free char *msg = render_sanitize(vmctl_error_get_message(r->st->errors[j]));
            fprintf(m, "%s: %s\n", vmctl_error_get_code(r->st->errors[j]), msg ? msg : "?");
        }
    }
    if (s->n == 0)
        fputs("No running VMs.\n", m);
    fclose(m);
    if (tty) {
        fputs(first ? "\033[H\033[2J" : "\033[H", stdout);
        for (char *p = buf, *nl; p && *p; p = nl + 1) {
            nl = strchr(p, '\n');
            if (!nl) {
                fputs(p, stdout);
                break;
            }
            fwrite(p, 1, (size_t)(nl - p), stdout);
            fputs("\033[K\n", stdout);
        }
        fputs("\033[J", stdout);
    } else {
        fputs(buf, stdout);
        fputc('\n', stdout);
    }
    fflush(stdout);
    free(buf);
}

static int watch(cli *c, vmctl_ctx *ctx, double interval)
{
    bool tty = isatty(STDOUT_FILENO);
    cli_interrupted = 0;
    cli_catch_signals(true);
    sample prev = {0};
    bool first = true;
    while (!cli_interrupted) {
        char **names = NULL;
        size_t n = 0;
        int r = list_names(c, ctx, &names, &n);
        if (r != EXIT_OK) {
            sample_clear(&prev);
            return r;
        }
        double t0 = mono_now();
        sample cur = {0};
        r = first ? take_sample_with_rate(ctx, names, n, interval < 1 ? interval : 1, &cur)
                  : take_sample(ctx, names, n, sample_flags, &cur);
        names_free(names, n);
        if (r < 0) {
            sample_clear(&cur);
            sample_clear(&prev);
            fprintf(stderr, "vmctl: out of memory\n");
            return EXIT_ERROR;
        }
        if (!first)
            rates(&prev, &cur);
        if (cli_interrupted) {
            sample_clear(&cur);
            break;
        }
        draw_frame(&cur, tty, first);
        first = false;
        sample_clear(&prev);
        prev = cur;
        sleep_until(t0 + interval);
    }
    sample_clear(&prev);
    cli_restore_signals();
    return EXIT_OK;
}

int cmd_stats(cli *c, int argc, char **argv)
{
    static const struct option options[] = {
        {"watch", no_argument, NULL, 'w'},
        {"interval", required_argument, NULL, OPT_INTERVAL},
        {"prometheus", no_argument, NULL, OPT_PROMETHEUS},
        {"no-guest", no_argument, NULL, OPT_NO_GUEST},
        {},
    };
    bool watch_mode = false, prometheus = false;
    double interval = 0;
    int o, r;
    while ((o = cli_getopt(c, argc, argv, "w", options)) != -1) {
        switch (o) {
        case 'w':
            watch_mode = true;
            break;
        case OPT_INTERVAL:
            if (cli_parse_seconds(c, "--interval", optarg, &interval) < 0)
                return EXIT_ERROR;
            break;
        case OPT_PROMETHEUS:
            prometheus = true;
            break;
        case OPT_NO_GUEST:
            sample_flags |= VMCTL_STATS_NO_GUEST;
            break;
        default:
            return c->exit_code;
        }
    }
    if (prometheus && c->json)
        return cli_usage_error(c, "--prometheus and --json are two output formats: pick one");
    if (prometheus && interval > 0)
        return cli_usage_error(c, "--interval does not go with --prometheus, which has counters "
                                  "only (rate() them in Prometheus)");
    if (watch_mode && (prometheus || c->json))
        return cli_usage_error(c, "--watch redraws a table: it does not go with %s",
                               prometheus ? "--prometheus" : "--json");
    vmctl_ctx *ctx = cli_open_with_args(c, 0, SIZE_MAX, "NAME", &r);
    if (!ctx)
        return r;
    if (watch_mode)
        return watch(c, ctx, interval > 0 ? interval : 2);

    char **names = NULL;
    size_t n = 0;
    if ((r = list_names(c, ctx, &names, &n)) != EXIT_OK)
        return r;
    sample s = {0};
    bool rate = !prometheus && (!c->json || interval > 0);
    r = rate ? take_sample_with_rate(ctx, names, n, interval > 0 ? interval : 1, &s)
             : take_sample(ctx, names, n, sample_flags, &s);
    names_free(names, n);
    if (r < 0) {
        sample_clear(&s);
        fprintf(stderr, "vmctl: out of memory\n");
        return EXIT_ERROR;
    }
    int status = count_errors(&s) ? EXIT_ERROR : EXIT_OK;

    if (c->json) {
        json_t *a = json_array();
        for (size_t i = 0; i < s.n; i++)
            json_array_append_new(a, row_json(&s.rows[i]));
        sample_clear(&s);
        r = render_json(a);
        return r ? r : status;
    }
    if (prometheus) {
        vmctl_vm_stats **list = calloc(s.n + 1, sizeof(*list));
        size_t k = 0;
        for (size_t i = 0; list && i < s.n; i++)
            if (s.rows[i].st)
                list[k++] = s.rows[i].st;
        cleanup_free char *text = NULL;
        vmctl_error *e = NULL;
        if (!list || vmctl_vm_stats_prometheus(list, k, &text, &e) < 0) {
            free(list);
            sample_clear(&s);
            return e ? render_error(c, e) : EXIT_ERROR;
        }
        free(list);
        fputs(text, stdout);
        render_errors(c, &s);
        sample_clear(&s);
        return status;
    }
    if (s.n == 0) {
        printf("No running VMs. Start one with `vmctl start NAME`, or name a VM.\n");
    } else {
        table *t = make_table(&s);
        table_print(t, stdout);
        table_free(t);
    }
    fflush(stdout);
    render_errors(c, &s);
    sample_clear(&s);
    return status;
}
