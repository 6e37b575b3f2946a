/* SPDX-License-Identifier: MIT */
/* A VM's transient scope under systemd (jail-systemd.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include "error.h"
#include "jail-systemd.h"
#include "jail.h"
#include "util/util.h"

#define SD_DEST    "org.freedesktop.systemd1"
#define SD_PATH    "/org/freedesktop/systemd1"
#define SD_MANAGER "org.freedesktop.systemd1.Manager"
#define SD_UNIT    "org.freedesktop.systemd1.Unit"
#define SD_PRIVATE "unix:path=/run/systemd/private"
/* one D-Bus call's deadline */
#define CALL_USEC 5000000

static DLSYM_PROTOTYPE(sd_bus_new);
static DLSYM_PROTOTYPE(sd_bus_set_address);
static DLSYM_PROTOTYPE(sd_bus_start);
static DLSYM_PROTOTYPE(sd_bus_open_system);
static DLSYM_PROTOTYPE(sd_bus_flush_close_unref);
static DLSYM_PROTOTYPE(sd_bus_message_new_method_call);
static DLSYM_PROTOTYPE(sd_bus_message_append);
static DLSYM_PROTOTYPE(sd_bus_message_open_container);
static DLSYM_PROTOTYPE(sd_bus_message_close_container);
static DLSYM_PROTOTYPE(sd_bus_message_unref);
static DLSYM_PROTOTYPE(sd_bus_call);
static DLSYM_PROTOTYPE(sd_bus_call_method);
static DLSYM_PROTOTYPE(sd_bus_message_read);
static DLSYM_PROTOTYPE(sd_bus_get_property_string);
static DLSYM_PROTOTYPE(sd_bus_error_free);
static DLSYM_PROTOTYPE(sd_bus_error_has_name);

static const dl_symbol systemd_symbols[] = {
    DL_SYMBOL(sd_bus_new),
    DL_SYMBOL(sd_bus_set_address),
    DL_SYMBOL(sd_bus_start),
    DL_SYMBOL(sd_bus_open_system),
    DL_SYMBOL(sd_bus_flush_close_unref),
    DL_SYMBOL(sd_bus_message_new_method_call),
    DL_SYMBOL(sd_bus_message_append),
    DL_SYMBOL(sd_bus_message_open_container),
    DL_SYMBOL(sd_bus_message_close_container),
    DL_SYMBOL(sd_bus_message_unref),
    DL_SYMBOL(sd_bus_call),
    DL_SYMBOL(sd_bus_call_method),
    DL_SYMBOL(sd_bus_message_read),
    DL_SYMBOL(sd_bus_get_property_string),
    DL_SYMBOL(sd_bus_error_free),
    DL_SYMBOL(sd_bus_error_has_name),
};

dl_library dl_lib_systemd = DL_LIBRARY("libsystemd.so.0", "libsystemd0",
                                       "the VMs' transient scopes under systemd", systemd_symbols);

bool jail_systemd_running(void)
{
    return access("/run/systemd/system", F_OK) == 0;
}

/* systemd's private socket first (root's; no dbus-daemon needed), then the system bus. */
static int bus_open(sd_bus **ret, char **why, vmctl_error **reterr)
{
    *ret = NULL;
    int r = dl_open(&dl_lib_systemd, reterr);
    if (r < 0) {
        if (why)
            *why = str_printf("cannot load %s", dl_lib_systemd.soname);
        return r;
    }
    sd_bus *b = NULL;
    int rp = sym_sd_bus_new(&b);
    if (rp >= 0)
        rp = sym_sd_bus_set_address(b, SD_PRIVATE);
    if (rp >= 0)
        rp = sym_sd_bus_start(b);
    if (rp >= 0) {
        *ret = b;
        return 0;
    }
    sym_sd_bus_flush_close_unref(b);
    b = NULL;
    int rs = sym_sd_bus_open_system(&b);
    if (rs >= 0) {
        *ret = b;
        return 0;
    }
    sym_sd_bus_flush_close_unref(b);
    if (why)
        *why = str_printf("systemd's manager does not answer on %s (%s) nor on the system bus "
                          "(%s)",
                          SD_PRIVATE + strlen("unix:path="), strerror(-rp), strerror(-rs));
    return err_make(reterr, VMCTL_E_JAILER_FAILED, -rs,
                    "systemd's manager does not answer on %s (%s) nor on the system bus (%s)",
                    SD_PRIVATE + strlen("unix:path="), strerror(-rp), strerror(-rs));
}

static void bus_closep(sd_bus **b)
{
    if (*b)
        sym_sd_bus_flush_close_unref(*b);
}
#define cleanup_bus __attribute__((cleanup(bus_closep)))

int jail_systemd_probe(char **why)
{
    cleanup_error vmctl_error *e = NULL;
    cleanup_bus sd_bus *b = NULL;
    int r = bus_open(&b, why, &e);
    if (r < 0)
        return r;
    sd_bus_error err = SD_BUS_ERROR_NULL;
    cleanup_free char *v = NULL;
    r = sym_sd_bus_get_property_string(b, SD_DEST, SD_PATH, SD_MANAGER, "Version", &err, &v);
    if (r < 0 && why)
        *why = str_printf("systemd's manager does not answer: %s",
                          err.message ? err.message : strerror(-r));
    sym_sd_bus_error_free(&err);
    return r < 0 ? r : 0;
}

/* The unit's ActiveState; NULL when it does not exist (or the call fails). */
static char *unit_state(sd_bus *b, const char *unit)
{
    sd_bus_error err = SD_BUS_ERROR_NULL;
    sd_bus_message *reply = NULL;
    char *state = NULL;
    int r =
        sym_sd_bus_call_method(b, SD_DEST, SD_PATH, SD_MANAGER, "GetUnit", &err, &reply, "s", unit);
    const char *path = NULL;
    if (r >= 0 && sym_sd_bus_message_read(reply, "o", &path) >= 0 && path)
        (void)sym_sd_bus_get_property_string(b, SD_DEST, path, SD_UNIT, "ActiveState", &err,
                                             &state);
    sym_sd_bus_message_unref(reply);
    sym_sd_bus_error_free(&err);
    return state;
}

static int stop_on(sd_bus *b, const char *unit, uint64_t usec)
{
    sd_bus_error err = SD_BUS_ERROR_NULL;
    sd_bus_message *reply = NULL;
    int r = sym_sd_bus_call_method(b, SD_DEST, SD_PATH, SD_MANAGER, "StopUnit", &err, &reply, "ss",
                                   unit, "replace");
    bool none = r < 0 && sym_sd_bus_error_has_name(&err, "org.freedesktop.systemd1.NoSuchUnit");
    sym_sd_bus_message_unref(reply);
    sym_sd_bus_error_free(&err);
    if (none)
        return 0;
    if (r < 0)
        return r;
    uint64_t deadline = now_usec() + usec;
    for (;;) {
        cleanup_free char *s = unit_state(b, unit);
        if (!s || streq(s, "inactive") || streq(s, "failed"))
            return 0;
        if (now_usec() >= deadline)
            return -ETIMEDOUT;
        sleep_usec(10000);
    }
}

int jail_scope_stop(const char *unit, uint64_t usec)
{
    cleanup_bus sd_bus *b = NULL;
    cleanup_error vmctl_error *e = NULL;
    int r = bus_open(&b, NULL, &e);
    if (r < 0)
        return r;
    return stop_on(b, unit, usec);
}

static int scope_failed(vmctl_error **reterr, const jail_scope_props *p, int e, const char *what,
                        const char *msg)
{
    int r = err_make(reterr, VMCTL_E_JAILER_FAILED, e ? e : EIO,
                     "cannot make the systemd scope '%s' of the hypervisor: %s%s%s", p->unit, what,
                     msg ? ": " : "", msg ? msg : "");
    err_detail(reterr, "step", "%s", jail_step_name(JAIL_STEP_SYSTEMD_SCOPE));
    err_detail(reterr, "unit", "%s", p->unit);
    err_help(reterr,
             "`vmctl doctor` shows whether systemd's manager answers; `systemctl status "
             "%s` and the journal say why it refused; create the VM with `--no-jail` to "
             "run it unconfined.",
             p->unit);
    return r;
}

/* StartTransientUnit(name, mode, properties a(sv), aux a(sa(sv))) */
static int start_call(sd_bus *b, const jail_scope_props *p, sd_bus_error *err)
{
    sd_bus_message *m = NULL, *reply = NULL;
    int r = sym_sd_bus_message_new_method_call(b, &m, SD_DEST, SD_PATH, SD_MANAGER,
                                               "StartTransientUnit");
    if (r >= 0)
        r = sym_sd_bus_message_append(m, "ss", p->unit, "fail");
    if (r >= 0)
        r = sym_sd_bus_message_open_container(m, 'a', "(sv)");
    if (r >= 0)
        r = sym_sd_bus_message_append(m, "(sv)(sv)(sv)(sv)(sv)", "Description", "s",
                                      p->description ? p->description : p->unit, "Slice", "s",
                                      p->slice, "Delegate", "b", 1, "PIDs", "au", 1,
                                      (uint32_t)p->pid, "CollectMode", "s", "inactive-or-failed");
    /* accounting: systemd then makes the scope's group on each controller's hierarchy (on v1:
     * cpuacct and blkio as well, which vmctl stats reads) */
    if (r >= 0)
        r = sym_sd_bus_message_append(m, "(sv)(sv)(sv)(sv)", "CPUAccounting", "b", 1,
                                      "MemoryAccounting", "b", 1, "TasksAccounting", "b", 1,
                                      "IOAccounting", "b", 1);
    if (r >= 0 && p->cpu_quota > 0)
        r = sym_sd_bus_message_append(m, "(sv)", "CPUQuotaPerSecUSec", "t",
                                      (uint64_t)(p->cpu_quota * 1e6 + 0.5));
    if (r >= 0 && p->cpu_weight)
        r = sym_sd_bus_message_append(m, "(sv)", "CPUWeight", "t", p->cpu_weight);
    if (r >= 0 && p->memory_max)
        r = sym_sd_bus_message_append(m, "(sv)", "MemoryMax", "t", p->memory_max);
    if (r >= 0 && p->tasks_max)
        r = sym_sd_bus_message_append(m, "(sv)", "TasksMax", "t", p->tasks_max);
    if (r >= 0)
        r = sym_sd_bus_message_close_container(m);
    if (r >= 0)
        r = sym_sd_bus_message_append(m, "a(sa(sv))", 0);
    if (r >= 0)
        r = sym_sd_bus_call(b, m, CALL_USEC, err, &reply);
    sym_sd_bus_message_unref(reply);
    sym_sd_bus_message_unref(m);
    return r;
}

int jail_scope_start(const jail_scope_props *p, uint64_t usec, vmctl_error **reterr)
{
    cleanup_bus sd_bus *b = NULL;
    int r = bus_open(&b, NULL, reterr);
    if (r < 0) {
        err_detail(reterr, "step", "%s", jail_step_name(JAIL_STEP_SYSTEMD_SCOPE));
        return r;
    }
    sd_bus_error err = SD_BUS_ERROR_NULL;
    r = start_call(b, p, &err);
    if (r < 0 && sym_sd_bus_error_has_name(&err, "org.freedesktop.systemd1.UnitExists")) {
        /* a scope of this VM's left from before (a vmctl killed before it stopped it) */
        sym_sd_bus_error_free(&err);
        (void)stop_on(b, p->unit, usec);
        r = start_call(b, p, &err);
    }
    if (r < 0) {
        r = scope_failed(reterr, p, -r, "StartTransientUnit failed", err.message);
        sym_sd_bus_error_free(&err);
        return r;
    }
    sym_sd_bus_error_free(&err);
    /* the job of a scope is done at once (the processes are moved, the cgroup made); the state
     * is polled rather than JobRemoved subscribed to (bounded) */
    uint64_t deadline = now_usec() + usec;
    for (;;) {
        cleanup_free char *s = unit_state(b, p->unit);
        if (s && streq(s, "active"))
            return 0;
        if (s && streq(s, "failed"))
            return scope_failed(reterr, p, EIO, "the scope did not start: its state is", s);
        if (now_usec() >= deadline)
            return scope_failed(reterr, p, ETIMEDOUT, "not active in time: its state is",
                                s ? s : "unknown");
        sleep_usec(5000);
    }
}
