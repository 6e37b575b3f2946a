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

#define STORE_SCHEMA_VERSION  7
#define STORE_BUSY_TIMEOUT_MS 10000

/* Host ports reserved by VMs (forwards, the SSH forward): unique per protocol, so two creates
 * racing for one port cannot both commit. A VM's reservations go with its row (the trigger). */
#define PORTS_SQL                                                                                  \
    "CREATE TABLE ports (\n"                                                                       \
    "  host_port INTEGER NOT NULL,\n"                                                              \
    "  proto TEXT NOT NULL,\n"                                                                     \
    "  vm TEXT NOT NULL,\n"                                                                        \
    "  guest_port INTEGER NOT NULL,\n"                                                             \
    "  PRIMARY KEY (host_port, proto)\n"                                                           \
    ");\n"                                                                                         \
    "CREATE INDEX ports_vm ON ports (vm);\n"                                                       \
    "CREATE TRIGGER vms_release_ports AFTER DELETE ON vms BEGIN\n"                                 \
    "  DELETE FROM ports WHERE vm = old.name;\n"                                                   \
    "END;\n"

/* Guest CIDs (AF_VSOCK): NULL when the VM has none; unique among the store's VMs (NULLs do not
 * collide), so two creates racing for one CID cannot both commit. It goes with the row. */
#define CID_INDEX_SQL "CREATE UNIQUE INDEX vms_cid ON vms (cid);\n"

/* Which VMFile made the VM (its canonical path; NULL: made by hand, or before version 4) and how
 * its last provisioning went (docs/vmfile.md "Projects", "Provisioning state"). */
#define PROJECT_INDEX_SQL "CREATE INDEX vms_project ON vms (project);\n"

/* The IP pool of `--net tap` (docs/networking.md): one link (a /30 of the pool) per VM, unique
 * by its network address, device name and MAC, so two creates racing for one link cannot both
 * commit. It goes with the row (the trigger). */
#define LEASES_SQL                                                                                 \
    "CREATE TABLE leases (\n"                                                                      \
    "  vm TEXT PRIMARY KEY,\n"                                                                     \
    "  subnet INTEGER NOT NULL UNIQUE,\n"                                                          \
    "  prefix INTEGER NOT NULL,\n"                                                                 \
    "  ifname TEXT NOT NULL UNIQUE,\n"                                                             \
    "  mac TEXT NOT NULL UNIQUE\n"                                                                 \
    ");\n"                                                                                         \
    "CREATE TRIGGER vms_release_lease AFTER DELETE ON vms BEGIN\n"                                 \
    "  DELETE FROM leases WHERE vm = old.name;\n"                                                  \
    "END;\n"

/* The uid each VM's jailed hypervisor runs as (docs/isolation.md): unique, so two starts racing
 * for one uid cannot both commit; it goes with the VM's row (the trigger). */
#define JAIL_UIDS_SQL                                                                              \
    "CREATE TABLE jail_uids (\n"                                                                   \
    "  vm TEXT PRIMARY KEY,\n"                                                                     \
    "  uid INTEGER NOT NULL UNIQUE\n"                                                              \
    ");\n"                                                                                         \
    "CREATE TRIGGER vms_release_jail_uid AFTER DELETE ON vms BEGIN\n"                              \
    "  DELETE FROM jail_uids WHERE vm = old.name;\n"                                               \
    "END;\n"

static const char schema_sql[] =
    "CREATE TABLE vms (\n"
    "  name TEXT PRIMARY KEY,\n"
    "  state TEXT NOT NULL,\n"
    "  config TEXT NOT NULL,\n"
    "  pid INTEGER NOT NULL DEFAULT 0,\n"
    "  pid_start INTEGER NOT NULL DEFAULT 0,\n"
    "  dir TEXT NOT NULL,\n"
    "  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,\n"
    "  complete INTEGER NOT NULL DEFAULT 0,\n"
    "  owner_pid INTEGER NOT NULL DEFAULT 0, owner_start INTEGER NOT NULL DEFAULT 0,\n"
    "  cid INTEGER,\n"
    "  project TEXT,\n"
    "  provision_state TEXT NOT NULL DEFAULT 'none',\n"
    "  provision_step INTEGER NOT NULL DEFAULT 0,\n"
    "  provision_error TEXT,\n"
    "  provisioned_at INTEGER,\n"
    "  provision_hash TEXT\n"
    ");\n" PORTS_SQL CID_INDEX_SQL PROJECT_INDEX_SQL LEASES_SQL "PRAGMA user_version = 5;\n";
/* a new store is made at version 5, then goes up the chain from there (migrate_5_6_sql,
 * migrate_6_7_sql) */
_Static_assert(STORE_SCHEMA_VERSION == 7, "schema_sql is version 5, two steps below");

/* Version 1 -> 2: the ports table, filled from the forwards recorded in each VM's config. */
static const char migrate_1_2_sql[] = PORTS_SQL
    "INSERT OR IGNORE INTO ports (host_port, proto, vm, guest_port)\n"
    "  SELECT json_extract(p.value, '$.host'), json_extract(p.value, '$.proto'), v.name,\n"
    "         json_extract(p.value, '$.guest')\n"
    "  FROM vms v, json_each(v.config, '$.ports') p WHERE json_valid(v.config);\n"
    "PRAGMA user_version = 2;\n";

/* Version 2 -> 3: the cid column (every existing VM without one). */
static const char migrate_2_3_sql[] =
    "ALTER TABLE vms ADD COLUMN cid INTEGER;\n" CID_INDEX_SQL "PRAGMA user_version = 3;\n";

/* Version 3 -> 4: the project and provisioning columns. Existing VMs get no project (they are
 * treated as made by hand: `vmctl up` does not take them over) and provision_state 'none'. */
static const char migrate_3_4_sql[] =
    "ALTER TABLE vms ADD COLUMN project TEXT;\n"
    "ALTER TABLE vms ADD COLUMN provision_state TEXT NOT NULL "
    "DEFAULT 'none';\n"
    "ALTER TABLE vms ADD COLUMN provision_step INTEGER NOT NULL "
    "DEFAULT 0;\n"
    "ALTER TABLE vms ADD COLUMN provision_error TEXT;\n"
    "ALTER TABLE vms ADD COLUMN provisioned_at INTEGER;\n"
    "ALTER TABLE vms ADD COLUMN provision_hash TEXT;\n" PROJECT_INDEX_SQL
    "PRAGMA user_version = 4;\n";

/* Version 4 -> 5: the IP pool's leases (no VM had tap networking before). */
static const char migrate_4_5_sql[] = LEASES_SQL "PRAGMA user_version = 5;\n";

/* Version 5 -> 6: snapshots (docs/snapshots.md). A snapshot is unique per VM and name; complete
 * is 0 while the snapshot that owns it (owner_pid, owner_start) is being made. snapshot_refs:
 * every VM (vm) that maps a snapshot's RAM or disk layer; its references go with its row. */
static const char migrate_5_6_sql[] =
    "CREATE TABLE snapshots (\n"
    "  vm TEXT NOT NULL,\n"
    "  name TEXT NOT NULL,\n"
    "  kind TEXT NOT NULL,\n"
    "  dir TEXT NOT NULL,\n"
    "  ram TEXT,\n"
    "  config TEXT NOT NULL,\n"
    "  qemu_version TEXT NOT NULL,\n"
    "  machine TEXT NOT NULL,\n"
    "  memory_mib INTEGER NOT NULL,\n"
    "  created_at INTEGER NOT NULL,\n"
    "  complete INTEGER NOT NULL DEFAULT 0,\n"
    "  owner_pid INTEGER NOT NULL DEFAULT 0, owner_start INTEGER NOT NULL DEFAULT 0,\n"
    "  PRIMARY KEY (vm, name)\n"
    ");\n"
    "CREATE TABLE snapshot_refs (\n"
    "  vm TEXT NOT NULL,\n"
    "  snap_vm TEXT NOT NULL,\n"
    "  snap TEXT NOT NULL,\n"
    "  PRIMARY KEY (vm, snap_vm, snap)\n"
    ");\n"
    "CREATE INDEX snapshot_refs_snap ON snapshot_refs (snap_vm, snap);\n"
    "CREATE TRIGGER vms_release_snapshot_refs AFTER DELETE ON vms BEGIN\n"
    "  DELETE FROM snapshot_refs WHERE vm = old.name;\n"
    "END;\n"
    "PRAGMA user_version = 6;\n";

/* Version 6 -> 7: the jail uids (every existing VM gets one at its next jailed start). */
static const char migrate_6_7_sql[] = JAIL_UIDS_SQL "PRAGMA user_version = 7;\n";

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
    ST_LEASE_GET,
    ST_LEASE_LIST,
    ST_LEASE_RANGE,
    ST_LEASE_INSERT,
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
    [ST_LEASE_GET] = "SELECT vm, subnet, prefix, ifname, mac FROM leases WHERE vm = ?1",
    [ST_LEASE_LIST] = "SELECT vm, subnet, prefix, ifname, mac FROM leases ORDER BY subnet",
    [ST_LEASE_RANGE] = "SELECT subnet FROM leases WHERE subnet >= ?1 AND subnet <= ?2 "
                       "ORDER BY subnet",
    [ST_LEASE_INSERT] =
        "INSERT INTO leases (vm, subnet, prefix, ifname, mac) VALUES (?1, ?2, ?3, ?4, ?5)",
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
static int exec_sql(store *s, const char *sql, const char *what, vmctl_error **reterr)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : store_error(s, rc, what, reterr);
}

/* A single integer from a one-row query. */
static int query_int(store *s, const char *sql, const char *what, int64_t *ret,
                     vmctl_error **reterr)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *ret = sqlite3_column_int64(st, 0);
            rc = SQLITE_OK;
        }
    }
    if (rc != SQLITE_OK) {
        int r = store_error(s, rc, what, reterr);
        sqlite3_finalize(st);
        return r;
    }
    sqlite3_finalize(st);
    return 0;
}

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

/* Create the schema in an empty database; refuse one we do not know. */
static int ensure_schema(store *s, vmctl_error **reterr)
{
    int64_t version = 0, n_objects = 0;
    int r = query_int(s, "PRAGMA user_version", "reading the schema version", &version, reterr);
    if (r < 0)
        return r;
    if (version == STORE_SCHEMA_VERSION)
        return 0;

    if (version >= 1 && version < STORE_SCHEMA_VERSION) {
        r = tx_begin(s, reterr);
        if (r < 0)
            return r;
        r = query_int(s, "PRAGMA user_version", "reading the schema version", &version, reterr);
        int64_t from = version;
        if (r >= 0 && version >= 1 && version < STORE_SCHEMA_VERSION) {
            /* one step at a time, all in this transaction */
            int rc =
                version == 1 ? sqlite3_exec(s->db, migrate_1_2_sql, NULL, NULL, NULL) : SQLITE_OK;
            if (rc == SQLITE_OK && version <= 2)
                rc = sqlite3_exec(s->db, migrate_2_3_sql, NULL, NULL, NULL);
            if (rc == SQLITE_OK && version <= 3)
                rc = sqlite3_exec(s->db, migrate_3_4_sql, NULL, NULL, NULL);
            if (rc == SQLITE_OK && version <= 4)
                rc = sqlite3_exec(s->db, migrate_4_5_sql, NULL, NULL, NULL);
            if (rc == SQLITE_OK && version <= 5)
                rc = sqlite3_exec(s->db, migrate_5_6_sql, NULL, NULL, NULL);
            if (rc == SQLITE_OK && version <= 6)
                rc = sqlite3_exec(s->db, migrate_6_7_sql, NULL, NULL, NULL);
            if (rc == SQLITE_ERROR) {
                /* the old tables are not what that version had */
                r = err_make(reterr, VMCTL_E_STORE_CORRUPT, EBADMSG,
                             "cannot upgrade the store '%s' to schema version %d: %s", s->path,
                             STORE_SCHEMA_VERSION, sqlite3_errmsg(s->db));
                err_detail(reterr, "path", "%s", s->path);
                err_help(reterr,
                         "Restore '%s' from a backup, or move it aside and run `vmctl "
                         "doctor --fix` to adopt the VMs under vms/ into a new store",
                         s->path);
            } else if (rc != SQLITE_OK)
                r = store_error(s, rc, "upgrading the schema", reterr);
        }
        if (r < 0) {
            tx_rollback(s);
            return r;
        }
        if (from >= 1 && from < STORE_SCHEMA_VERSION)
            return tx_commit(s, reterr);
        tx_rollback(s);
        if (version == STORE_SCHEMA_VERSION)
            return 0;
    }

    if (version == 0) {
        r = tx_begin(s, reterr);
        if (r < 0)
            return r;
        /* Re-read under the write lock: another process may have created it meanwhile. */
        r = query_int(s, "PRAGMA user_version", "reading the schema version", &version, reterr);
        if (r >= 0 && version == 0) {
            r = query_int(s, "SELECT count(*) FROM sqlite_master", "reading the schema", &n_objects,
                          reterr);
            if (r >= 0 && n_objects == 0)
                r = exec_sql(s, schema_sql, "creating the schema", reterr);
            if (r >= 0 && n_objects == 0)
                r = exec_sql(s, migrate_5_6_sql, "creating the schema", reterr);
            if (r >= 0 && n_objects == 0)
                r = exec_sql(s, migrate_6_7_sql, "creating the schema", reterr);
        }
        if (r < 0) {
            tx_rollback(s);
            return r;
        }
        if (version == 0 && n_objects == 0)
            return tx_commit(s, reterr);
        tx_rollback(s);
        if (version == STORE_SCHEMA_VERSION)
            return 0;
    }

    if (version == 0)
        r = err_make(reterr, VMCTL_E_STORE_CORRUPT, EBADMSG,
                     "'%s' is a SQLite database but not a vmctl store (it has tables of its own "
                     "and no schema version)",
                     s->path);
    else
        r = err_make(reterr, VMCTL_E_STORE_CORRUPT, EBADMSG,
                     "the store '%s' has schema version %lld; this vmctl knows version %d", s->path,
                     (long long)version, STORE_SCHEMA_VERSION);
    err_detail(reterr, "path", "%s", s->path);
    err_detail_num(reterr, "schema_version", (double)version);
    err_help(reterr,
             "Use the vmctl that wrote this store (a newer one if the version is higher), or move "
             "'%s' aside and run `vmctl doctor --fix` to adopt the VMs under vms/ into a new "
             "store",
             s->path);
    return r;
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

    /* The first statement that reads the file: a non-SQLite file fails here (SQLITE_NOTADB). */
    r = set_wal(s, reterr);
    if (r < 0)
        return r;
    /* The transaction statements do not depend on the schema; the others need it. */
    r = prepare_stmts(s, ST_BEGIN, ST_ROLLBACK + 1, reterr);
    if (r < 0)
        return r;
    r = ensure_schema(s, reterr);
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
    cleanup_reset sqlite3_stmt *st = s->stmt[ST_LEASE_GET];
    sqlite3_bind_text(st, 1, vm, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return 0;
    if (rc != SQLITE_ROW)
        return store_error(s, rc, "reading a VM's network lease", reterr);
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
    cleanup_reset sqlite3_stmt *st = s->stmt[ST_LEASE_LIST];
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
        return store_error(s, rc, "listing network leases", reterr);
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
    int r = tx_begin(s, reterr);
    if (r < 0)
        return r;
    /* under the write lock: the VM's lease if it has one, else the lowest free link */
    r = store_lease_get(s, vm, ret, reterr);
    if (r != 0) {
        tx_rollback(s);
        return r < 0 ? r : 0;
    }
    uint64_t step = 1ull << (32 - link_prefix);
    uint64_t first = pool, last = (uint64_t)pool + (1ull << (32 - pool_prefix)) - step;
    uint64_t cand = first;
    {
        cleanup_reset sqlite3_stmt *st = s->stmt[ST_LEASE_RANGE];
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
            r = store_error(s, rc, "choosing an address from the pool", reterr);
            sqlite3_reset(st);
            tx_rollback(s);
            return r;
        }
    }
    if (cand > last) {
        tx_rollback(s);
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
        cleanup_reset sqlite3_stmt *st = s->stmt[ST_LEASE_INSERT];
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
                r = store_error(s, rc, "leasing an address", reterr);
            sqlite3_reset(st);
            tx_rollback(s);
            return r;
        }
    }
    r = tx_commit(s, reterr);
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
    int r = tx_begin(s, reterr);
    if (r < 0)
        return r;
    sqlite3_stmt *st = NULL;
    int64_t uid = 0;
    int rc = sqlite3_prepare_v2(s->db, "SELECT uid FROM jail_uids WHERE vm = ?1", -1, &st, NULL);
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
            s->db,
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
            tx_rollback(s);
            r = err_make(reterr, VMCTL_E_JAILER_FAILED, EUSERS,
                         "no free jail uid in %u-%u for vm '%s'", base, base + count - 1, name);
            err_detail(reterr, "step", "uid allocation");
            err_help(reterr, "Widen the range with VMCTL_JAIL_UID_COUNT, or destroy VMs you no "
                             "longer need (`vmctl destroy NAME`).");
            return r;
        }
        if (rc == SQLITE_OK)
            rc = sqlite3_prepare_v2(s->db, "INSERT INTO jail_uids (vm, uid) VALUES (?1, ?2)", -1,
                                    &st, NULL);
        if (rc == SQLITE_OK) {
            sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 2, uid);
            rc = sqlite3_step(st);
            rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
        }
        sqlite3_finalize(st);
    }
    if (rc != SQLITE_OK) {
        r = store_error(s, rc, "allocating a jail uid", reterr);
        tx_rollback(s);
        return r;
    }
    if (!alloc) {
        tx_rollback(s);
        *ret = (uint32_t)uid;
        return 0;
    }
    r = tx_commit(s, reterr);
    if (r < 0)
        return r;
    *ret = (uint32_t)uid;
    return 0;
}
