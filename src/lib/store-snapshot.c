/* SPDX-License-Identifier: MIT */
/* Snapshot rows (store-snapshot.h): the snapshots and snapshot_refs tables of schema 5. */
#include <errno.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "store-snapshot.h"
#include "util/util.h"

#define SNAP_COLUMNS                                                                               \
    "vm, name, kind, dir, ram, config, qemu_version, machine, memory_mib, created_at, complete, "  \
    "owner_pid, owner_start"

void store_snapshot_free(store_snapshot *s)
{
    if (!s)
        return;
    free(s->vm);
    free(s->name);
    free(s->kind);
    free(s->dir);
    free(s->ram);
    free(s->config);
    free(s->qemu_version);
    free(s->machine);
    free(s);
}

void store_snapshot_list_free(store_snapshot **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_snapshot_free(list[i]);
    free(list);
}

static void finalizep(sqlite3_stmt **st)
{
    sqlite3_finalize(*st);
}
#define cleanup_stmt __attribute__((cleanup(finalizep)))

static int prepare(store *s, const char *sql, sqlite3_stmt **st, vmctl_error **reterr)
{
    int rc = sqlite3_prepare_v2(store_sqlite(s), sql, -1, st, NULL);
    return rc == SQLITE_OK ? 0 : store_fail(s, rc, "preparing a snapshot query", reterr);
}

static char *col_str(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? strdup((const char *)t) : NULL;
}

static store_snapshot *from_row(sqlite3_stmt *st)
{
    store_snapshot *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->vm = col_str(st, 0);
    s->name = col_str(st, 1);
    s->kind = col_str(st, 2);
    s->dir = col_str(st, 3);
    s->ram = col_str(st, 4);
    s->config = col_str(st, 5);
    s->qemu_version = col_str(st, 6);
    s->machine = col_str(st, 7);
    s->memory_mib = (unsigned)sqlite3_column_int64(st, 8);
    s->created_at = sqlite3_column_int64(st, 9);
    s->complete = sqlite3_column_int64(st, 10) != 0;
    s->owner_pid = (pid_t)sqlite3_column_int64(st, 11);
    s->owner_start = (uint64_t)sqlite3_column_int64(st, 12);
    if (!s->vm || !s->name || !s->kind || !s->dir || !s->config || !s->qemu_version ||
        !s->machine) {
        store_snapshot_free(s);
        return NULL;
    }
    return s;
}

int store_snapshot_insert(store *s, const store_snapshot *snap, vmctl_error **reterr)
{
    cleanup_stmt sqlite3_stmt *st = NULL;
    int r = prepare(s,
                    "INSERT INTO snapshots (" SNAP_COLUMNS
                    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                    &st, reterr);
    if (r < 0)
        return r;
    sqlite3_bind_text(st, 1, snap->vm, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, snap->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, snap->kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, snap->dir, -1, SQLITE_STATIC);
    if (snap->ram)
        sqlite3_bind_text(st, 5, snap->ram, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, snap->config, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, snap->qemu_version, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, snap->machine, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 9, snap->memory_mib);
    sqlite3_bind_int64(st, 10, snap->created_at);
    sqlite3_bind_int64(st, 11, snap->complete);
    sqlite3_bind_int64(st, 12, snap->owner_pid);
    sqlite3_bind_int64(st, 13, (sqlite3_int64)snap->owner_start);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || (rc & 0xff) == SQLITE_CONSTRAINT)
        return -EEXIST;
    return rc == SQLITE_DONE ? 0 : store_fail(s, rc, "recording a snapshot", reterr);
}

int store_snapshot_set_complete(store *s, const char *vm, const char *name, vmctl_error **reterr)
{
    cleanup_stmt sqlite3_stmt *st = NULL;
    int r =
        prepare(s, "UPDATE snapshots SET complete = 1 WHERE vm = ?1 AND name = ?2", &st, reterr);
    if (r < 0)
        return r;
    sqlite3_bind_text(st, 1, vm, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        return store_fail(s, rc, "completing a snapshot", reterr);
    return sqlite3_changes(store_sqlite(s)) == 1 ? 0 : -ENOENT;
}

int store_snapshot_get(store *s, const char *vm, const char *name, store_snapshot **ret,
                       vmctl_error **reterr)
{
    cleanup_stmt sqlite3_stmt *st = NULL;
    int r = prepare(s, "SELECT " SNAP_COLUMNS " FROM snapshots WHERE vm = ?1 AND name = ?2", &st,
                    reterr);
    if (r < 0)
        return r;
    sqlite3_bind_text(st, 1, vm, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return -ENOENT;
    if (rc != SQLITE_ROW)
        return store_fail(s, rc, "reading a snapshot", reterr);
    *ret = from_row(st);
    return *ret ? 0 : err_make(reterr, VMCTL_E_STORE_CORRUPT, EBADMSG, "a snapshot row is damaged");
}

int store_snapshot_list(store *s, const char *vm, store_snapshot ***ret, size_t *n,
                        vmctl_error **reterr)
{
    cleanup_stmt sqlite3_stmt *st = NULL;
    int r = prepare(s,
                    "SELECT " SNAP_COLUMNS " FROM snapshots WHERE ?1 IS NULL OR vm = ?1 "
                    "ORDER BY vm, created_at, name",
                    &st, reterr);
    if (r < 0)
        return r;
    if (vm)
        sqlite3_bind_text(st, 1, vm, -1, SQLITE_STATIC);
    store_snapshot **list = NULL;
    size_t count = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        store_snapshot *one = from_row(st);
        store_snapshot **grown = one ? realloc(list, (count + 1) * sizeof(*list)) : NULL;
        if (!grown) {
            store_snapshot_free(one);
            store_snapshot_list_free(list, count);
            return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
        }
        list = grown;
        list[count++] = one;
    }
    if (rc != SQLITE_DONE) {
        store_snapshot_list_free(list, count);
        return store_fail(s, rc, "listing snapshots", reterr);
    }
    *ret = list;
    *n = count;
    return 0;
}

static int exec_bound(store *s, const char *sql, const char *a, const char *b, const char *c,
                      const char *what, vmctl_error **reterr)
{
    cleanup_stmt sqlite3_stmt *st = NULL;
    int r = prepare(s, sql, &st, reterr);
    if (r < 0)
        return r;
    sqlite3_bind_text(st, 1, a, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
    if (c)
        sqlite3_bind_text(st, 3, c, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    return rc == SQLITE_DONE ? sqlite3_changes(store_sqlite(s)) : store_fail(s, rc, what, reterr);
}

int store_vm_set_config(store *s, const char *vm, const char *config, vmctl_error **reterr)
{
    int r = exec_bound(s, "UPDATE vms SET config = ?1 WHERE name = ?2", config, vm, NULL,
                       "recording a VM's disk layer", reterr);
    return r < 0 ? r : 0;
}

int store_snapshot_delete(store *s, const char *vm, const char *name, bool force, char **ret_user,
                          size_t *ret_count, vmctl_error **reterr)
{
    int r = store_tx_begin(s, reterr);
    if (r < 0)
        return r;
    size_t count = 0;
    {
        cleanup_stmt sqlite3_stmt *st = NULL;
        if ((r = prepare(
                 s, "SELECT vm FROM snapshot_refs WHERE snap_vm = ?1 AND snap = ?2 ORDER BY vm",
                 &st, reterr)) < 0)
            goto out;
        sqlite3_bind_text(st, 1, vm, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (count++ == 0 && ret_user)
                *ret_user = col_str(st, 0);
        }
        if (rc != SQLITE_DONE) {
            r = store_fail(s, rc, "reading a snapshot's references", reterr);
            goto out;
        }
    }
    if (ret_count)
        *ret_count = count;
    if (count && !force) {
        r = -EBUSY;
        goto out;
    }
    if ((r = exec_bound(s, "DELETE FROM snapshot_refs WHERE snap_vm = ?1 AND snap = ?2", vm, name,
                        NULL, "removing a snapshot's references", reterr)) < 0 ||
        (r = exec_bound(s, "DELETE FROM snapshots WHERE vm = ?1 AND name = ?2", vm, name, NULL,
                        "removing a snapshot", reterr)) < 0)
        goto out;
    if (r == 0) {
        r = -ENOENT;
        goto out;
    }
    /* a template's group (snapshot.c template_share) goes with it */
    if ((r = exec_bound(s, "DELETE FROM jail_uids WHERE vm = '@' || ?1 || '/' || ?2", vm, name,
                        NULL, "releasing a snapshot's group", reterr)) < 0)
        goto out;
    return store_tx_commit(s, reterr);
out:
    store_tx_rollback(s);
    return r;
}

int store_snapshot_ref_add(store *s, const char *vm, const char *snap_vm, const char *snap,
                           vmctl_error **reterr)
{
    int r =
        exec_bound(s, "INSERT OR IGNORE INTO snapshot_refs (vm, snap_vm, snap) VALUES (?1, ?2, ?3)",
                   vm, snap_vm, snap, "recording a snapshot reference", reterr);
    return r < 0 ? r : 0;
}

int store_snapshot_ref_count(store *s, const char *snap_vm, const char *snap, size_t *ret,
                             vmctl_error **reterr)
{
    cleanup_stmt sqlite3_stmt *st = NULL;
    int r = prepare(s, "SELECT count(*) FROM snapshot_refs WHERE snap_vm = ?1 AND snap = ?2", &st,
                    reterr);
    if (r < 0)
        return r;
    sqlite3_bind_text(st, 1, snap_vm, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, snap, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        return store_fail(s, rc, "counting a snapshot's references", reterr);
    *ret = (size_t)sqlite3_column_int64(st, 0);
    return 0;
}

/* ---------- warm pools ---------- */

void store_pool_list_free(store_pool *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++) {
        free(list[i].snap_vm);
        free(list[i].snap);
        free(list[i].project);
    }
    free(list);
}

int store_pool_set(store *s, const char *snap_vm, const char *snap, unsigned size,
                   const char *project, vmctl_error **reterr)
{
    cleanup_stmt sqlite3_stmt *st = NULL;
    int r =
        prepare(s,
                size ? "INSERT INTO pools (snap_vm, snap, size, project) VALUES (?1, ?2, ?3, ?4) "
                       "ON CONFLICT (snap_vm, snap) DO UPDATE SET size = excluded.size, "
                       "project = excluded.project"
                     : "DELETE FROM pools WHERE snap_vm = ?1 AND snap = ?2",
                &st, reterr);
    if (r < 0)
        return r;
    sqlite3_bind_text(st, 1, snap_vm, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, snap, -1, SQLITE_STATIC);
    if (size) {
        sqlite3_bind_int64(st, 3, size);
        if (project)
            sqlite3_bind_text(st, 4, project, -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, 4);
    }
    int rc = sqlite3_step(st);
    return rc == SQLITE_DONE ? 0 : store_fail(s, rc, "recording a pool", reterr);
}

int store_pool_size(store *s, const char *snap_vm, const char *snap, unsigned *ret,
                    vmctl_error **reterr)
{
    cleanup_stmt sqlite3_stmt *st = NULL;
    int r = prepare(s, "SELECT size FROM pools WHERE snap_vm = ?1 AND snap = ?2", &st, reterr);
    if (r < 0)
        return r;
    sqlite3_bind_text(st, 1, snap_vm, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, snap, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return store_fail(s, rc, "reading a pool", reterr);
    *ret = rc == SQLITE_ROW ? (unsigned)sqlite3_column_int64(st, 0) : 0;
    return 0;
}

int store_pool_list(store *s, store_pool **ret, size_t *n, vmctl_error **reterr)
{
    cleanup_stmt sqlite3_stmt *st = NULL;
    int r = prepare(s, "SELECT snap_vm, snap, size, project FROM pools ORDER BY snap_vm, snap", &st,
                    reterr);
    if (r < 0)
        return r;
    store_pool *list = NULL;
    size_t count = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        store_pool *grown = realloc(list, (count + 1) * sizeof(*list));
        if (!grown) {
            store_pool_list_free(list, count);
            return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
        }
        list = grown;
        list[count] =
            (store_pool){col_str(st, 0), col_str(st, 1), (unsigned)sqlite3_column_int64(st, 2),
                         sqlite3_column_type(st, 3) == SQLITE_NULL ? NULL : col_str(st, 3)};
        count++;
        if (!list[count - 1].snap_vm || !list[count - 1].snap ||
            (sqlite3_column_type(st, 3) != SQLITE_NULL && !list[count - 1].project)) {
            store_pool_list_free(list, count);
            return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
        }
    }
    if (rc != SQLITE_DONE) {
        store_pool_list_free(list, count);
        return store_fail(s, rc, "listing pools", reterr);
    }
    *ret = list;
    *n = count;
    return 0;
}

int store_pool_members(store *s, const char *snap_vm, const char *snap, char ***ret,
                       vmctl_error **reterr)
{
    cleanup_stmt sqlite3_stmt *st = NULL;
    int r = prepare(s,
                    "SELECT vm FROM pool_vms WHERE ?1 IS NULL OR (snap_vm = ?1 AND snap = ?2) "
                    "ORDER BY vm",
                    &st, reterr);
    if (r < 0)
        return r;
    if (snap_vm) {
        sqlite3_bind_text(st, 1, snap_vm, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, snap, -1, SQLITE_STATIC);
    }
    cleanup_strv char **names = calloc(1, sizeof(*names));
    size_t count = 0;
    int rc = SQLITE_NOMEM;
    while (names && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        char **grown = realloc(names, (count + 2) * sizeof(*names));
        if (!grown || !(grown[count] = col_str(st, 0))) {
            if (grown)
                names = grown;
            return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
        }
        names = grown;
        names[++count] = NULL;
    }
    if (!names)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    if (rc != SQLITE_DONE)
        return store_fail(s, rc, "listing a pool", reterr);
    *ret = TAKE_PTR(names);
    return 0;
}

int store_pool_member_add(store *s, const char *vm, const char *snap_vm, const char *snap,
                          vmctl_error **reterr)
{
    int r = exec_bound(s, "INSERT INTO pool_vms (vm, snap_vm, snap) VALUES (?1, ?2, ?3)", vm,
                       snap_vm, snap, "recording a pool member", reterr);
    return r < 0 ? r : 0;
}

int store_pool_take(store *s, const char *vm, const char *name, const char *config, const char *dir,
                    const char *project, pid_t owner_pid, uint64_t owner_start,
                    vmctl_error **reterr)
{
    int r = store_tx_begin(s, reterr);
    if (r < 0)
        return r;
    {
        cleanup_stmt sqlite3_stmt *st = NULL;
        if ((r = prepare(s,
                         "UPDATE vms SET name = ?2, config = ?3, dir = ?4, project = ?5, "
                         "complete = 0, owner_pid = ?6, owner_start = ?7, updated_at = ?8 "
                         "WHERE name = ?1 AND name IN (SELECT vm FROM pool_vms)",
                         &st, reterr)) < 0)
            goto out;
        sqlite3_bind_text(st, 1, vm, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, config, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, dir, -1, SQLITE_STATIC);
        if (project)
            sqlite3_bind_text(st, 5, project, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, owner_pid);
        sqlite3_bind_int64(st, 7, (sqlite3_int64)owner_start);
        sqlite3_bind_int64(st, 8, (sqlite3_int64)(realtime_usec() / 1000000));
        int rc = sqlite3_step(st);
        if ((rc & 0xff) == SQLITE_CONSTRAINT) {
            r = -EEXIST;
            goto out;
        }
        if (rc != SQLITE_DONE) {
            r = store_fail(s, rc, "taking a pool member", reterr);
            goto out;
        }
        if (sqlite3_changes(store_sqlite(s)) != 1) {
            r = -ENOENT;
            goto out;
        }
    }
    static const char *const follow[] = {
        "UPDATE ports SET vm = ?2 WHERE vm = ?1",
        "UPDATE leases SET vm = ?2 WHERE vm = ?1",
        "UPDATE jail_uids SET vm = ?2 WHERE vm = ?1",
        "UPDATE snapshot_refs SET vm = ?2 WHERE vm = ?1",
        "DELETE FROM pool_vms WHERE vm = ?1 OR vm = ?2",
    };
    for (size_t i = 0; i < sizeof(follow) / sizeof(follow[0]); i++)
        if ((r = exec_bound(s, follow[i], vm, name, NULL, "taking a pool member", reterr)) < 0)
            goto out;
    return store_tx_commit(s, reterr);
out:
    store_tx_rollback(s);
    return r;
}
