/* SPDX-License-Identifier: MIT */
/* The host resources a VM holds in the store: its link of the IP pool (`leases`, --net tap) and
 * its jail uid (`jail_uids`). Both go with the VM's row (triggers); both are taken in one
 * transaction under the write lock, UNIQUE constraints behind it. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "error.h"
#include "store.h"
#include "util/util.h"

static void finalizep(sqlite3_stmt **st)
{
    sqlite3_finalize(*st);
}
#define cleanup_finalize __attribute__((cleanup(finalizep)))

static sqlite3_stmt *prep(store *s, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(store_sqlite(s), sql, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return NULL;
    }
    return st;
}

static char *column_strdup(sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    return t ? strdup((const char *)t) : NULL;
}

/* --- the IP pool (leases) --- */

void store_lease_clear(store_lease *l)
{
    if (!l)
        return;
    free(l->vm);
    free(l->ifname);
    free(l->mac);
    *l = (store_lease){};
}

void store_lease_list_free(store_lease *l, size_t n)
{
    for (size_t i = 0; l && i < n; i++)
        store_lease_clear(&l[i]);
    free(l);
}

static int row_to_lease(sqlite3_stmt *st, store_lease *l)
{
    *l = (store_lease){
        .vm = column_strdup(st, 0),
        .subnet = (uint32_t)sqlite3_column_int64(st, 1),
        .prefix = (unsigned)sqlite3_column_int64(st, 2),
        .ifname = column_strdup(st, 3),
        .mac = column_strdup(st, 4),
    };
    if (!l->vm || !l->ifname || !l->mac) {
        store_lease_clear(l);
        return -ENOMEM;
    }
    return 0;
}

int store_lease_get(store *s, const char *vm, store_lease *ret, vmctl_error **reterr)
{
    if (!s || !vm || !ret)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "store_lease_get: invalid argument");
    cleanup_finalize sqlite3_stmt *st =
        prep(s, "SELECT vm, subnet, prefix, ifname, mac FROM leases WHERE vm = ?1");
    if (!st)
        return store_fail(s, sqlite3_errcode(store_sqlite(s)), "reading a VM's network lease",
                          reterr);
    sqlite3_bind_text(st, 1, vm, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return 0;
    if (rc != SQLITE_ROW)
        return store_fail(s, rc, "reading a VM's network lease", reterr);
    if (row_to_lease(st, ret) < 0)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    return 1;
}

int store_lease_list(store *s, store_lease **ret, size_t *n, vmctl_error **reterr)
{
    if (!s || !ret || !n)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "store_lease_list: invalid argument");
    *ret = NULL;
    *n = 0;
    cleanup_finalize sqlite3_stmt *st =
        prep(s, "SELECT vm, subnet, prefix, ifname, mac FROM leases ORDER BY subnet");
    if (!st)
        return store_fail(s, sqlite3_errcode(store_sqlite(s)), "listing network leases", reterr);
    store_lease *list = NULL;
    size_t k = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        store_lease *nl = realloc(list, (k + 1) * sizeof(*nl));
        if (!nl) {
            store_lease_list_free(list, k);
            return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
        }
        list = nl;
        if (row_to_lease(st, &list[k]) < 0) {
            store_lease_list_free(list, k);
            return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
        }
        k++;
    }
    if (rc != SQLITE_DONE) {
        store_lease_list_free(list, k);
        return store_fail(s, rc, "listing network leases", reterr);
    }
    *ret = list;
    *n = k;
    return 0;
}

int store_lease_alloc(store *s, const char *vm, uint32_t pool, unsigned pool_prefix,
                      unsigned link_prefix, store_lease_name_fn name_fn, store_lease *ret,
                      vmctl_error **reterr)
{
    if (!s || !vm || !ret || !name_fn || pool_prefix > link_prefix || link_prefix > 30)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "store_lease_alloc: invalid argument");
    int r = store_tx_begin(s, reterr);
    if (r < 0)
        return r;
    /* under the write lock: the VM's lease if it has one, else the lowest free link */
    r = store_lease_get(s, vm, ret, reterr);
    if (r != 0) {
        store_tx_rollback(s);
        return r < 0 ? r : 0;
    }
    uint64_t step = 1ull << (32 - link_prefix);
    uint64_t first = pool, last = (uint64_t)pool + (1ull << (32 - pool_prefix)) - step;
    uint64_t cand = first;
    {
        cleanup_finalize sqlite3_stmt *st = prep(
            s, "SELECT subnet FROM leases WHERE subnet >= ?1 AND subnet <= ?2 ORDER BY subnet");
        if (!st) {
            r = store_fail(s, sqlite3_errcode(store_sqlite(s)), "choosing an address from the pool",
                           reterr);
            store_tx_rollback(s);
            return r;
        }
        sqlite3_bind_int64(st, 1, (sqlite3_int64)first);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)last);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            uint64_t used = (uint64_t)sqlite3_column_int64(st, 0);
            if (used > cand)
                break; /* a gap: cand is free */
            if (used + step > cand)
                cand = used + step;
        }
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
            r = store_fail(s, rc, "choosing an address from the pool", reterr);
            sqlite3_reset(st);
            store_tx_rollback(s);
            return r;
        }
    }
    if (cand > last) {
        store_tx_rollback(s);
        char a[16];
        snprintf(a, sizeof(a), "%u.%u.%u.%u", pool >> 24, (pool >> 16) & 0xff, (pool >> 8) & 0xff,
                 pool & 0xff);
        r = err_make(reterr, VMCTL_E_NETWORK_SETUP_FAILED, EADDRNOTAVAIL,
                     "the address pool %s/%u is exhausted (%llu links of /%u, all leased)", a,
                     pool_prefix, (unsigned long long)((last - first) / step + 1), link_prefix);
        err_detail(reterr, "pool", "%s/%u", a, pool_prefix);
        err_detail(reterr, "vm", "%s", vm);
        err_help(reterr,
                 "Destroy VMs you no longer need (`vmctl network show` lists the leases), or "
                 "give a larger pool in $VMCTL_NET_POOL.");
        return r;
    }
    char ifname[16], mac[18];
    name_fn(vm, (uint32_t)cand, ifname, mac);
    {
        cleanup_finalize sqlite3_stmt *st = prep(
            s, "INSERT INTO leases (vm, subnet, prefix, ifname, mac) VALUES (?1, ?2, ?3, ?4, ?5)");
        if (!st) {
            r = store_fail(s, sqlite3_errcode(store_sqlite(s)), "leasing an address", reterr);
            store_tx_rollback(s);
            return r;
        }
        sqlite3_bind_text(st, 1, vm, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)cand);
        sqlite3_bind_int64(st, 3, link_prefix);
        sqlite3_bind_text(st, 4, ifname, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, mac, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_DONE) {
            if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
                r = err_make(reterr, VMCTL_E_NETWORK_SETUP_FAILED, EADDRINUSE,
                             "the link, device name '%s' or MAC %s chosen for vm '%s' is "
                             "already leased",
                             ifname, mac, vm);
                err_detail(reterr, "vm", "%s", vm);
                err_detail(reterr, "device", "%s", ifname);
            } else
                r = store_fail(s, rc, "leasing an address", reterr);
            sqlite3_reset(st);
            store_tx_rollback(s);
            return r;
        }
    }
    r = store_tx_commit(s, reterr);
    if (r < 0)
        return r;
    *ret = (store_lease){.vm = strdup(vm),
                         .subnet = (uint32_t)cand,
                         .prefix = link_prefix,
                         .ifname = strdup(ifname),
                         .mac = strdup(mac)};
    if (!ret->vm || !ret->ifname || !ret->mac) {
        store_lease_clear(ret);
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    }
    return 0;
}

/* ---------- jail uids ---------- */

int store_vm_jail_uid(store *s, const char *name, uint32_t base, uint32_t count, bool alloc,
                      uint32_t *ret, vmctl_error **reterr)
{
    if (!s || !name || !ret || !count)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "store_vm_jail_uid: invalid argument");
    *ret = 0;
    int r = store_tx_begin(s, reterr);
    if (r < 0)
        return r;
    sqlite3_stmt *st = NULL;
    int64_t uid = 0;
    int rc = sqlite3_prepare_v2(store_sqlite(s), "SELECT uid FROM jail_uids WHERE vm = ?1", -1, &st,
                                NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            uid = sqlite3_column_int64(st, 0);
        rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    sqlite3_finalize(st);
    st = NULL;
    if (rc == SQLITE_OK && !uid && alloc) {
        /* the lowest free uid of the range */
        rc = sqlite3_prepare_v2(
            store_sqlite(s),
            "SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM jail_uids WHERE uid = ?1) THEN ?1 "
            "ELSE (SELECT min(a.uid) + 1 FROM jail_uids a WHERE a.uid >= ?1 AND NOT EXISTS "
            "(SELECT 1 FROM jail_uids b WHERE b.uid = a.uid + 1)) END",
            -1, &st, NULL);
        if (rc == SQLITE_OK) {
            sqlite3_bind_int64(st, 1, base);
            rc = sqlite3_step(st);
            if (rc == SQLITE_ROW)
                uid = sqlite3_column_int64(st, 0);
            rc = rc == SQLITE_ROW ? SQLITE_OK : rc;
        }
        sqlite3_finalize(st);
        st = NULL;
        if (rc == SQLITE_OK && (uid < base || uid >= (int64_t)base + count)) {
            store_tx_rollback(s);
            r = err_make(reterr, VMCTL_E_JAILER_FAILED, EUSERS,
                         "no free jail uid in %u-%u for vm '%s'", base, base + count - 1, name);
            err_detail(reterr, "step", "uid allocation");
            err_help(reterr, "Widen the range with VMCTL_JAIL_UID_COUNT, or destroy VMs you no "
                             "longer need (`vmctl destroy NAME`).");
            return r;
        }
        if (rc == SQLITE_OK)
            rc = sqlite3_prepare_v2(
                store_sqlite(s), "INSERT INTO jail_uids (vm, uid) VALUES (?1, ?2)", -1, &st, NULL);
        if (rc == SQLITE_OK) {
            sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 2, uid);
            rc = sqlite3_step(st);
            rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
        }
        sqlite3_finalize(st);
    }
    if (rc != SQLITE_OK) {
        r = store_fail(s, rc, "allocating a jail uid", reterr);
        store_tx_rollback(s);
        return r;
    }
    if (!alloc) {
        store_tx_rollback(s);
        *ret = (uint32_t)uid;
        return 0;
    }
    r = store_tx_commit(s, reterr);
    if (r < 0)
        return r;
    *ret = (uint32_t)uid;
    return 0;
}
