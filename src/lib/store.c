/* SPDX-License-Identifier: MIT */
/* The store: SQLite in WAL mode at $VMCTL_HOME/vmctl.db (schema in docs/architecture.md).
 *
 * - One sqlite3 handle per store, opened SQLITE_OPEN_NOMUTEX: a store belongs to one thread.
 *   SQLite's unix VFS opens the database, its -wal and -shm files with O_CLOEXEC (test-store
 *   checks that no descriptor of ours leaks into a child).
 * - Every statement is prepared once per handle (SQLITE_PREPARE_PERSISTENT) and reset after use.
 * - Every write is BEGIN IMMEDIATE ... COMMIT: the write lock is taken up front, so a transaction
 *   never has to upgrade a read lock (which SQLite would refuse with SQLITE_BUSY at once). Waits
 *   for the lock are bounded by the busy timeout; past it: store::locked.
 * - State changes are compare-and-set on (name, state[, pid]). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "error.h"
#include "state.h"
#include "store.h"
#include "util/util.h"

#define STORE_BUSY_TIMEOUT_MS 10000

#define VM_COLUMNS                                                                                 \
    "name, state, config, pid, pid_start, dir, created_at, updated_at, complete, owner_pid, "      \
    "owner_start, cid, project, provision_state, provision_step, provision_error, "                \
    "provisioned_at, provision_hash"

enum {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_INSERT,
    ST_GET,
    ST_LIST,
    ST_SET_STATE,
    ST_SET_COMPLETE,
    ST_CLAIM,
    ST_DELETE,
    ST_PORT_INSERT,
    ST_PORT_OWNER,
    ST_CID_FREE,
    ST_CID_SET,
    ST_SET_PROVISION,
    ST_SET_PROJECT,
    _ST_MAX,
};

static const char *const stmt_sql[_ST_MAX] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_INSERT] = "INSERT INTO vms (" VM_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
                  "?10, ?11, ?12, ?13, 'none', 0, NULL, NULL, NULL)",
    [ST_GET] = "SELECT " VM_COLUMNS " FROM vms WHERE name = ?1",
    [ST_LIST] = "SELECT " VM_COLUMNS " FROM vms ORDER BY name",
    [ST_SET_STATE] = "UPDATE vms SET state = ?1, pid = ?2, pid_start = ?3, updated_at = ?4 "
                     "WHERE name = ?5 AND state = ?6 AND (?7 < 0 OR pid = ?7)",
    [ST_SET_COMPLETE] = "UPDATE vms SET complete = 1, updated_at = ?1 WHERE name = ?2",
    [ST_CLAIM] = "UPDATE vms SET owner_pid = ?1, owner_start = ?2, updated_at = ?3 "
                 "WHERE name = ?4 AND complete = 0 AND owner_pid = ?5 AND owner_start = ?6",
    [ST_DELETE] = "DELETE FROM vms WHERE name = ?1",
    [ST_PORT_INSERT] =
        "INSERT INTO ports (host_port, proto, vm, guest_port) VALUES (?1, ?2, ?3, ?4)",
    [ST_PORT_OWNER] = "SELECT vm FROM ports WHERE host_port = ?1 AND proto = ?2",
    /* the smallest CID >= ?1 that no VM holds: ?1 itself, or one above a held one */
    [ST_CID_FREE] = "SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM vms WHERE cid = ?1) THEN ?1 "
                    "ELSE (SELECT min(a.cid) + 1 FROM vms a WHERE a.cid >= ?1 AND NOT EXISTS "
                    "(SELECT 1 FROM vms b WHERE b.cid = a.cid + 1)) END",
    [ST_CID_SET] = "UPDATE vms SET cid = ?1, updated_at = ?2 WHERE name = ?3",
    [ST_SET_PROVISION] = "UPDATE vms SET provision_state = ?1, provision_step = ?2, "
                         "provision_error = ?3, provision_hash = coalesce(?4, provision_hash), "
                         "provisioned_at = CASE WHEN ?1 = 'ok' THEN ?5 ELSE provisioned_at END, "
                         "updated_at = ?5 WHERE name = ?6",
    [ST_SET_PROJECT] = "UPDATE vms SET project = ?1, updated_at = ?2 WHERE name = ?3 AND "
                       "(project IS NULL OR project = ?1)",
};

static const char *const provision_names[] = {
    [VMCTL_PROVISION_NONE] = "none",
    [VMCTL_PROVISION_PENDING] = "pending",
    [VMCTL_PROVISION_OK] = "ok",
    [VMCTL_PROVISION_FAILED] = "failed",
};

const char *store_provision_state_name(vmctl_provision_state st)
{
    return (unsigned)st < ELEMENTSOF(provision_names) ? provision_names[st] : NULL;
}

struct store {
    sqlite3 *db;
    char *path;
    sqlite3_stmt *stmt[_ST_MAX];
};

/* Reset a borrowed prepared statement when it goes out of scope (ends its read transaction). */
static inline void stmt_resetp(sqlite3_stmt **st)
{
    if (*st) {
        sqlite3_reset(*st);
        sqlite3_clear_bindings(*st);
    }
}
#define cleanup_reset __attribute__((cleanup(stmt_resetp)))

static int64_t now_sec(void)
{
    return (int64_t)(realtime_usec() / 1000000);
}

/* Turn a failing SQLite result into an error object. */
static int store_error(store *s, int rc, const char *what, vmctl_error **reterr)
{
    const char *msg = s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
    int sys = s->db ? sqlite3_system_errno(s->db) : 0;
    int r;

    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        r = err_make(reterr, VMCTL_E_STORE_LOCKED, EBUSY,
                     "the store '%s' stayed locked for more than %d s while %s", s->path,
                     STORE_BUSY_TIMEOUT_MS / 1000, what);
        err_detail_num(reterr, "timeout_seconds", STORE_BUSY_TIMEOUT_MS / 1000);
        break;
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
    case SQLITE_SCHEMA:
        r = err_make(reterr, VMCTL_E_STORE_CORRUPT, EBADMSG,
                     "the store '%s' is damaged or not a vmctl database (%s)", s->path, msg);
        err_help(reterr,
                 "Restore '%s' from a backup; or move it aside (with its -wal and -shm files) "
                 "and run `vmctl doctor --fix`, which adopts the VMs under vms/ into the new "
                 "store (disks kept, running VMs stay running). Never remove vms/ for this",
                 s->path);
        break;
    case SQLITE_FULL:
        r = err_make(reterr, VMCTL_E_IO, ENOSPC, "cannot write the store '%s' while %s: %s",
                     s->path, what, msg);
        break;
    case SQLITE_NOMEM:
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory while %s", what);
    case SQLITE_CANTOPEN:
    case SQLITE_IOERR:
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
        r = err_make(reterr, VMCTL_E_IO, sys > 0 ? sys : EIO,
                     "cannot access the store '%s' while %s: %s", s->path, what, msg);
        break;
    default:
        r = err_make(reterr, VMCTL_E_INTERNAL, EIO, "store '%s': %s failed: %s (sqlite code %d)",
                     s->path, what, msg, rc);
        break;
    }
    err_detail(reterr, "path", "%s", s->path);
    return r;
}

/* Run SQL with no result rows (or ignored ones). */
static int tx_begin(store *s, vmctl_error **reterr)
{
    sqlite3_stmt *st = s->stmt[ST_BEGIN];
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : store_error(s, rc, "taking the store's write lock", reterr);
}

static void tx_rollback(store *s)
{
    if (sqlite3_get_autocommit(s->db))
        return; /* nothing open (SQLite may already have rolled back) */
    sqlite3_stmt *st = s->stmt[ST_ROLLBACK];
    sqlite3_step(st);
    sqlite3_reset(st);
}

static int tx_commit(store *s, vmctl_error **reterr)
{
    sqlite3_stmt *st = s->stmt[ST_COMMIT];
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        int r = store_error(s, rc, "committing a change", reterr);
        tx_rollback(s);
        return r;
    }
    return 0;
}

/* For the store's other files (store-snapshot.c). */
sqlite3 *store_sqlite(store *s)
{
    return s->db;
}

int store_fail(store *s, int rc, const char *what, vmctl_error **reterr)
{
    return store_error(s, rc, what, reterr);
}

int store_tx_begin(store *s, vmctl_error **reterr)
{
    return tx_begin(s, reterr);
}

int store_tx_commit(store *s, vmctl_error **reterr)
{
    return tx_commit(s, reterr);
}

void store_tx_rollback(store *s)
{
    tx_rollback(s);
}

/* The journal mode change needs the database briefly to itself; a fresh database opened by
 * several processes at once can see SQLITE_BUSY here without the busy handler being consulted,
 * so retry until the same bound as everything else. */
static int set_wal(store *s, vmctl_error **reterr)
{
    uint64_t deadline = now_usec() + (uint64_t)STORE_BUSY_TIMEOUT_MS * 1000;
    for (;;) {
        int rc = sqlite3_exec(s->db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            return 0;
        if ((rc & 0xff) != SQLITE_BUSY || now_usec() >= deadline)
            return store_error(s, rc, "switching the store to WAL mode", reterr);
        sleep_usec(2000);
    }
}

/* Prepare statements [first, last). */
static int prepare_stmts(store *s, size_t first, size_t last, vmctl_error **reterr)
{
    for (size_t i = first; i < last; i++) {
        int rc = sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->stmt[i],
                                    NULL);
        if (rc != SQLITE_OK) {
            /* SQLITE_ERROR here means the tables are not what we expect. */
            if (rc == SQLITE_ERROR) {
                int r = err_make(reterr, VMCTL_E_STORE_CORRUPT, EBADMSG,
                                 "the store '%s' does not have the expected tables: %s", s->path,
                                 sqlite3_errmsg(s->db));
                err_detail(reterr, "path", "%s", s->path);
                err_help(reterr,
                         "Restore '%s' from a backup, or move it aside and run `vmctl doctor "
                         "--fix` to adopt the VMs under vms/ into a new store",
                         s->path);
                return r;
            }
            return store_error(s, rc, "preparing statements", reterr);
        }
    }
    return 0;
}

void store_close(store *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < _ST_MAX; i++)
        sqlite3_finalize(s->stmt[i]);
    sqlite3_close(s->db);
    free(s->path);
    free(s);
}

static int store_open_path(const char *path, store **ret, vmctl_error **reterr);
/* path as a 0600 file: created when create (else left absent), narrowed when it is ours. By path,
 * not through an fd of an existing file: closing any fd of a file drops all this process's POSIX
 * locks on it, SQLite's among them, and a process may hold several stores of one home at once
 * (vmctl serve: a context per request); another process then takes the database for unused and
 * removes its -wal and -shm under the open handles. */
static int make_private(const char *path, bool create)
{
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno != ENOENT)
            return -errno;
        if (!create)
            return 0;
        int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_CREAT | O_EXCL, 0600);
        if (fd < 0)
            return errno == EEXIST ? make_private(path, false) : -errno;
        close(fd); /* a new file: nobody holds locks on it yet */
        return 0;
    }
    if (S_ISREG(st.st_mode) && st.st_uid == geteuid() && (st.st_mode & 077) &&
        chmod(path, 0600) < 0)
        return -errno;
    return 0;
}

int store_open(const char *home, store **ret, vmctl_error **reterr)
{
    if (!home || !ret)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "store_open: invalid argument");

    int r = mkdir_p(home, 0700);
    if (r < 0) {
        r = err_make(reterr, VMCTL_E_IO, -r, "cannot create the vmctl home '%s'", home);
        err_detail(reterr, "path", "%s", home);
        return r;
    }
    cleanup_free char *path = str_printf("%s/vmctl.db", home);
    if (!path)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    return store_open_path(path, ret, reterr);
}

int store_open_empty(store **ret, vmctl_error **reterr)
{
    return store_open_path(":memory:", ret, reterr);
}

static int store_open_path(const char *path, store **ret, vmctl_error **reterr)
{
    int r;
    cleanup_store store *s = calloc(1, sizeof(*s));
    if (!s)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    s->path = strdup(path);
    if (!s->path)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");

    /* The store holds --env values: 0600 whatever the umask, also for a store made before
     * (SQLite gives -wal and -shm the database's mode when it creates them). */
    r = make_private(s->path, true);
    for (size_t i = 0; r >= 0 && i < 2; i++) {
        cleanup_free char *aux = str_printf("%s%s", s->path, i ? "-shm" : "-wal");
        r = aux ? make_private(aux, false) : -ENOMEM;
    }
    if (r < 0) {
        r = err_make(reterr, VMCTL_E_IO, -r, "cannot create the store '%s'", s->path);
        err_detail(reterr, "path", "%s", s->path);
        return r;
    }

    int rc = sqlite3_open_v2(
        s->path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK)
        return store_error(s, rc, "opening it", reterr);
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);
    /* No checkpoint when the last connection closes: every vmctl command would end with one
     * (two fdatasyncs, the WAL's pages copied back, -wal and -shm removed and recreated by the
     * next command). The WAL, synced at each commit, is checkpointed by SQLite's automatic
     * checkpoint once it holds 1000 pages. */
    (void)sqlite3_db_config(s->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);

    /* The first statement that reads the file: a non-SQLite file fails here (SQLITE_NOTADB). */
    r = set_wal(s, reterr);
    if (r < 0)
        return r;
    /* The transaction statements do not depend on the schema; the others need it. */
    r = prepare_stmts(s, ST_BEGIN, ST_ROLLBACK + 1, reterr);
    if (r < 0)
        return r;
    r = store_schema_ensure(s, s->path, reterr);
    if (r < 0)
        return r;
    r = prepare_stmts(s, ST_ROLLBACK + 1, _ST_MAX, reterr);
    if (r < 0)
        return r;

    *ret = TAKE_PTR(s);
    return 0;
}

/* --- rows --- */

void store_vm_free(store_vm *v)
{
    if (!v)
        return;
    free(v->name);
    free(v->config);
    free(v->dir);
    free(v->project);
    free(v->provision_error);
    free(v->provision_hash);
    free(v);
}

void store_vm_list_free(store_vm **list, size_t n)
{
    if (!list)
        return;
    for (size_t i = 0; i < n; i++)
        store_vm_free(list[i]);
    free(list);
}

static char *column_strdup(sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    return t ? strdup((const char *)t) : NULL;
}

/* Build a store_vm from the current row of a VM_COLUMNS query. */
static int row_to_vm(store *s, sqlite3_stmt *st, store_vm **ret, vmctl_error **reterr)
{
    cleanup_store_vm store_vm *v = calloc(1, sizeof(*v));
    if (!v)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");

    v->name = column_strdup(st, 0);
    const char *state = (const char *)sqlite3_column_text(st, 1);
    int k = vmctl_vm_state_from_string(state);
    v->config = column_strdup(st, 2);
    v->pid = (pid_t)sqlite3_column_int64(st, 3);
    v->pid_start = (uint64_t)sqlite3_column_int64(st, 4);
    v->dir = column_strdup(st, 5);
    v->created_at = sqlite3_column_int64(st, 6);
    v->updated_at = sqlite3_column_int64(st, 7);
    v->complete = sqlite3_column_int64(st, 8) != 0;
    v->owner_pid = (pid_t)sqlite3_column_int64(st, 9);
    v->owner_start = (uint64_t)sqlite3_column_int64(st, 10);
    v->cid = (uint32_t)sqlite3_column_int64(st, 11); /* NULL reads as 0: none */
    v->project = column_strdup(st, 12);
    const char *prov = (const char *)sqlite3_column_text(st, 13);
    v->provision_state = VMCTL_PROVISION_NONE;
    for (size_t i = 0; prov && i < ELEMENTSOF(provision_names); i++)
        if (streq(prov, provision_names[i]))
            v->provision_state = (vmctl_provision_state)i;
    v->provision_step = (unsigned)sqlite3_column_int64(st, 14);
    v->provision_error = column_strdup(st, 15);
    v->provisioned_at = sqlite3_column_int64(st, 16);
    v->provision_hash = column_strdup(st, 17);
    if (!v->name || !v->config || !v->dir)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    if (k < 0) {
        int r = err_make(reterr, VMCTL_E_STORE_CORRUPT, EBADMSG,
                         "the store '%s' records an unknown state '%s' for VM '%s'", s->path,
                         state ? state : "", v->name);
        err_detail(reterr, "path", "%s", s->path);
        err_detail(reterr, "vm", "%s", v->name);
        err_detail(reterr, "field", "state");
        return r;
    }
    v->state = (vmctl_vm_state)k;
    *ret = TAKE_PTR(v);
    return 0;
}

static int not_found(vmctl_error **reterr, const char *name)
{
    int r = err_make(reterr, VMCTL_E_VM_NOT_FOUND, ENOENT, "no VM named '%s'", name);
    err_detail(reterr, "vm", "%s", name);
    return r;
}

static int cid_taken(vmctl_error **reterr, uint32_t cid)
{
    int r = err_make(reterr, VMCTL_E_NETWORK_SETUP_FAILED, EADDRINUSE,
                     "guest CID %u is already held by another VM", cid);
    err_detail_num(reterr, "cid", cid);
    return r;
}

int store_vm_insert(store *s, const store_vm *v, vmctl_error **reterr)
{
    return store_vm_insert_ports(s, v, NULL, 0, reterr);
}

/* Reserve ports for v->name inside the open transaction. */
static int insert_ports(store *s, const char *name, const vmctl_port_forward *ports, size_t n,
                        vmctl_error **reterr)
{
    for (size_t i = 0; i < n; i++) {
        const char *proto = ports[i].udp ? "udp" : "tcp";
        cleanup_reset sqlite3_stmt *st = s->stmt[ST_PORT_INSERT];
        sqlite3_bind_int(st, 1, ports[i].host_port);
        sqlite3_bind_text(st, 2, proto, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, name, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 4, ports[i].guest_port);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
            continue;
        if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE) {
            int r = err_make(reterr, VMCTL_E_NETWORK_SETUP_FAILED, EADDRINUSE,
                             "host port %u/%s is already reserved by another VM",
                             ports[i].host_port, proto);
            err_detail_num(reterr, "port", ports[i].host_port);
            err_detail(reterr, "protocol", "%s", proto);
            err_help(reterr, "Choose another host port, or `vmctl list` to see which VM holds it.");
            return r;
        }
        return store_error(s, rc, "reserving a host port", reterr);
    }
    return 0;
}

int store_vm_insert_ports(store *s, const store_vm *v, const vmctl_port_forward *ports,
                          size_t n_ports, vmctl_error **reterr)
{
    if (!s || !v || !v->name || !v->config || !v->dir)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "store_vm_insert: invalid argument");
    const char *state = vmctl_vm_state_to_string(v->state);
    if (!state)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "store_vm_insert: invalid state %d",
                        (int)v->state);

    int r = tx_begin(s, reterr);
    if (r < 0)
        return r;

    int64_t now = now_sec();
    cleanup_reset sqlite3_stmt *st = s->stmt[ST_INSERT];
    sqlite3_bind_text(st, 1, v->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, state, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, v->config, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, v->pid);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)v->pid_start);
    sqlite3_bind_text(st, 6, v->dir, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, v->created_at ? v->created_at : now);
    sqlite3_bind_int64(st, 8, now);
    sqlite3_bind_int(st, 9, v->complete ? 1 : 0);
    sqlite3_bind_int64(st, 10, v->owner_pid);
    sqlite3_bind_int64(st, 11, (sqlite3_int64)v->owner_start);
    if (v->cid)
        sqlite3_bind_int64(st, 12, v->cid);
    else
        sqlite3_bind_null(st, 12);
    if (v->project)
        sqlite3_bind_text(st, 13, v->project, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 13);

    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) {
        if (rc == SQLITE_CONSTRAINT_UNIQUE && v->cid) {
            r = cid_taken(reterr, v->cid);
        } else if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE) {
            r = err_make(reterr, VMCTL_E_VM_ALREADY_EXISTS, EEXIST,
                         "a VM named '%s' already exists", v->name);
            err_detail(reterr, "vm", "%s", v->name);
        } else
            r = store_error(s, rc, "adding a VM", reterr);
        sqlite3_reset(st);
        tx_rollback(s);
        return r;
    }
    sqlite3_reset(st);
    r = insert_ports(s, v->name, ports, n_ports, reterr);
    if (r < 0) {
        tx_rollback(s);
        return r;
    }
    return tx_commit(s, reterr);
}

int store_port_owner(store *s, uint16_t host_port, bool udp, char **ret_vm, vmctl_error **reterr)
{
    if (!s || !ret_vm)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "store_port_owner: invalid argument");
    cleanup_reset sqlite3_stmt *st = s->stmt[ST_PORT_OWNER];
    sqlite3_bind_int(st, 1, host_port);
    sqlite3_bind_text(st, 2, udp ? "udp" : "tcp", -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    *ret_vm = NULL;
    if (rc == SQLITE_DONE)
        return 0;
    if (rc != SQLITE_ROW)
        return store_error(s, rc, "reading port reservations", reterr);
    *ret_vm = column_strdup(st, 0);
    return *ret_vm ? 1 : err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
}

/* Read one row with the prepared GET statement: 1 found, 0 absent, < 0 error. */
static int get_row(store *s, const char *name, store_vm **ret, vmctl_error **reterr)
{
    cleanup_reset sqlite3_stmt *st = s->stmt[ST_GET];
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return 0;
    if (rc != SQLITE_ROW)
        return store_error(s, rc, "reading a VM", reterr);
    int r = row_to_vm(s, st, ret, reterr);
    return r < 0 ? r : 1;
}

int store_vm_get(store *s, const char *name, store_vm **ret, vmctl_error **reterr)
{
    if (!s || !name || !ret)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "store_vm_get: invalid argument");
    int r = get_row(s, name, ret, reterr);
    if (r < 0)
        return r;
    if (r == 0)
        return not_found(reterr, name);
    return 0;
}

int store_vm_list(store *s, store_vm ***ret, size_t *n, vmctl_error **reterr)
{
    if (!s || !ret || !n)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "store_vm_list: invalid argument");

    cleanup_reset sqlite3_stmt *st = s->stmt[ST_LIST];
    store_vm **list = NULL;
    size_t len = 0, cap = 0;
    int r = 0;
    for (;;) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            r = store_error(s, rc, "listing VMs", reterr);
            break;
        }
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            store_vm **nl = realloc(list, sizeof(*nl) * ncap);
            if (!nl) {
                r = err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
                break;
            }
            list = nl;
            cap = ncap;
        }
        r = row_to_vm(s, st, &list[len], reterr);
        if (r < 0)
            break;
        len++;
    }
    if (r < 0) {
        store_vm_list_free(list, len);
        return r;
    }
    *ret = list;
    *n = len;
    return 0;
}

/* Step st, a bound write of the open transaction, and reset it. Returns how many rows it
 * changed, or its error (the transaction rolled back). */
static int tx_write(store *s, sqlite3_stmt *st, const char *what, vmctl_error **reterr)
{
    int rc = sqlite3_step(st);
    int r = rc == SQLITE_DONE ? sqlite3_changes(s->db) : store_error(s, rc, what, reterr);
    stmt_resetp(&st);
    if (r < 0)
        tx_rollback(s);
    return r;
}

/* A compare-and-set of the row `name` (st bound, in the open transaction): 1 when it changed the
 * row (committed); 0 when it missed (rolled back), with *ret_cur the row as it is now, read still
 * under the write lock, so it is the row that made the update miss; not_found when there is no
 * row; or the error. */
static int tx_compare_and_set(store *s, sqlite3_stmt *st, const char *name, const char *what,
                              store_vm **ret_cur, vmctl_error **reterr)
{
    int r = tx_write(s, st, what, reterr);
    if (r < 0)
        return r;
    if (r > 0) {
        r = tx_commit(s, reterr);
        return r < 0 ? r : 1;
    }
    r = get_row(s, name, ret_cur, reterr);
    tx_rollback(s);
    if (r < 0)
        return r;
    return r == 0 ? not_found(reterr, name) : 0;
}

int store_vm_set_state(store *s, const char *name, vmctl_vm_state from, pid_t from_pid,
                       vmctl_vm_state to, pid_t pid, uint64_t pid_start, vmctl_error **reterr)
{
    const char *from_s = vmctl_vm_state_to_string(from);
    const char *to_s = vmctl_vm_state_to_string(to);
    if (!s || !name || !from_s || !to_s)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "store_vm_set_state: invalid argument");

    int r = tx_begin(s, reterr);
    if (r < 0)
        return r;

    sqlite3_stmt *st = s->stmt[ST_SET_STATE];
    sqlite3_bind_text(st, 1, to_s, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, pid);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)pid_start);
    sqlite3_bind_int64(st, 4, now_sec());
    sqlite3_bind_text(st, 5, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, from_s, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, from_pid);
    /* a miss: lost the race, or asked from the wrong state: say what the row holds now */
    cleanup_store_vm store_vm *cur = NULL;
    r = tx_compare_and_set(s, st, name, "changing a VM's state", &cur, reterr);
    if (r != 0)
        return r < 0 ? r : 0;
    r = err_invalid_state(reterr, name, vmctl_vm_state_to_string(cur->state), to_s);
    if (cur->state == from && from_pid >= 0 && cur->pid != from_pid)
        err_note(reterr, "the VM's hypervisor process changed: expected pid %d, found pid %d",
                 (int)from_pid, (int)cur->pid);
    return r;
}

/* tx_write of a change to the row `name`, then commit; not_found when it matched no row. */
static int tx_write_one(store *s, sqlite3_stmt *st, const char *name, const char *what,
                        vmctl_error **reterr)
{
    int r = tx_write(s, st, what, reterr);
    if (r < 0)
        return r;
    if (r == 0) {
        tx_rollback(s);
        return not_found(reterr, name);
    }
    return tx_commit(s, reterr);
}

/* UPDATE/DELETE of one row by name in its own transaction; not_found when no row matched. */
static int write_by_name(store *s, int which, const char *name, bool bind_now, const char *what,
                         vmctl_error **reterr)
{
    int r = tx_begin(s, reterr);
    if (r < 0)
        return r;
    sqlite3_stmt *st = s->stmt[which];
    int i = 1;
    if (bind_now)
        sqlite3_bind_int64(st, i++, now_sec());
    sqlite3_bind_text(st, i, name, -1, SQLITE_STATIC);
    return tx_write_one(s, st, name, what, reterr);
}

int store_vm_set_complete(store *s, const char *name, vmctl_error **reterr)
{
    if (!s || !name)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL,
                        "store_vm_set_complete: invalid argument");
    return write_by_name(s, ST_SET_COMPLETE, name, true, "marking a VM complete", reterr);
}

int store_vm_delete(store *s, const char *name, vmctl_error **reterr)
{
    if (!s || !name)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "store_vm_delete: invalid argument");
    return write_by_name(s, ST_DELETE, name, false, "removing a VM", reterr);
}

int store_vm_claim(store *s, const char *name, pid_t dead_pid, uint64_t dead_start, pid_t pid,
                   uint64_t start, vmctl_error **reterr)
{
    if (!s || !name)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "store_vm_claim: invalid argument");

    int r = tx_begin(s, reterr);
    if (r < 0)
        return r;
    sqlite3_stmt *st = s->stmt[ST_CLAIM];
    sqlite3_bind_int64(st, 1, pid);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)start);
    sqlite3_bind_int64(st, 3, now_sec());
    sqlite3_bind_text(st, 4, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, dead_pid);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)dead_start);
    r = tx_write(s, st, "taking over an abandoned VM", reterr);
    if (r < 0)
        return r;
    if (r == 0) {
        tx_rollback(s);
        return 0; /* gone, completed, or already taken over by someone else */
    }
    r = tx_commit(s, reterr);
    return r < 0 ? r : 1;
}

int store_vm_alloc_cid(store *s, const char *name, uint32_t min, uint32_t *ret,
                       vmctl_error **reterr)
{
    if (!s || !name || !ret)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "store_vm_alloc_cid: invalid argument");
    if (min < STORE_MIN_CID)
        min = STORE_MIN_CID;
    int r = tx_begin(s, reterr);
    if (r < 0)
        return r;
    int64_t cid = 0;
    {
        cleanup_reset sqlite3_stmt *st = s->stmt[ST_CID_FREE];
        sqlite3_bind_int64(st, 1, min);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_ROW) {
            r = store_error(s, rc, "choosing a guest CID", reterr);
            sqlite3_reset(st);
            tx_rollback(s);
            return r;
        }
        cid = sqlite3_column_int64(st, 0);
    }
    if (cid < STORE_MIN_CID || cid > STORE_MAX_CID) {
        tx_rollback(s);
        r = err_make(reterr, VMCTL_E_NETWORK_SETUP_FAILED, EADDRNOTAVAIL,
                     "no free guest CID at or above %u", min);
        err_detail(reterr, "vm", "%s", name);
        return r;
    }
    {
        cleanup_reset sqlite3_stmt *st = s->stmt[ST_CID_SET];
        sqlite3_bind_int64(st, 1, cid);
        sqlite3_bind_int64(st, 2, now_sec());
        sqlite3_bind_text(st, 3, name, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_DONE) {
            /* the UNIQUE index: only if someone wrote without this transaction's lock */
            r = rc == SQLITE_CONSTRAINT_UNIQUE ? cid_taken(reterr, (uint32_t)cid)
                                               : store_error(s, rc, "setting a guest CID", reterr);
            sqlite3_reset(st);
            tx_rollback(s);
            return r;
        }
    }
    if (sqlite3_changes(s->db) == 0) {
        tx_rollback(s);
        return not_found(reterr, name);
    }
    r = tx_commit(s, reterr);
    if (r < 0)
        return r;
    *ret = (uint32_t)cid;
    return 0;
}

int store_vm_set_provision(store *s, const char *name, vmctl_provision_state state, unsigned step,
                           const char *error, const char *hash, vmctl_error **reterr)
{
    const char *st_s = store_provision_state_name(state);
    if (!s || !name || !st_s)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL,
                        "store_vm_set_provision: invalid argument");
    int r = tx_begin(s, reterr);
    if (r < 0)
        return r;
    sqlite3_stmt *st = s->stmt[ST_SET_PROVISION];
    sqlite3_bind_text(st, 1, st_s, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, step);
    if (error)
        sqlite3_bind_text(st, 3, error, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 3);
    if (hash)
        sqlite3_bind_text(st, 4, hash, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 4);
    sqlite3_bind_int64(st, 5, now_sec());
    sqlite3_bind_text(st, 6, name, -1, SQLITE_STATIC);
    return tx_write_one(s, st, name, "recording a VM's provisioning", reterr);
}

int store_vm_set_project(store *s, const char *name, const char *project, vmctl_error **reterr)
{
    if (!s || !name || !project)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "store_vm_set_project: invalid argument");
    int r = tx_begin(s, reterr);
    if (r < 0)
        return r;
    sqlite3_stmt *st = s->stmt[ST_SET_PROJECT];
    sqlite3_bind_text(st, 1, project, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now_sec());
    sqlite3_bind_text(st, 3, name, -1, SQLITE_STATIC);
    /* a miss: another project's (compare-and-set: a racing adopt cannot steal it) */
    cleanup_store_vm store_vm *cur = NULL;
    r = tx_compare_and_set(s, st, name, "recording a VM's project", &cur, reterr);
    if (r != 0)
        return r < 0 ? r : 0;
    r = err_make(reterr, VMCTL_E_VM_ALREADY_EXISTS, EEXIST, "VM '%s' belongs to the VMFile '%s'",
                 name, cur->project);
    err_detail(reterr, "vm", "%s", name);
    err_detail(reterr, "project", "%s", cur->project);
    return r;
}
