/* SPDX-License-Identifier: MIT */
/* The store's schema (docs/architecture.md, "Store schema"): the tables of a new store, the
 * upgrade steps from each earlier version, and the check that runs at every open. */
#include <errno.h>
#include <stdint.h>

#include <sqlite3.h>

#include "error.h"
#include "store.h"
#include "util/util.h"

#define STORE_SCHEMA_VERSION 9

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
 * migrate_6_7_sql, migrate_7_8_sql, migrate_8_9_sql) */
_Static_assert(STORE_SCHEMA_VERSION == 9, "schema_sql is version 5, four steps below");

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

/* Version 7 -> 8: warm pools (docs/snapshots.md "Warm pool"). pools: how many processes each
 * snapshot's pool keeps ready; pool_vms: the VM rows that are such processes (launched with
 * -incoming defer, hidden from `vmctl list`); a member goes with its VM row (the trigger). */
static const char migrate_7_8_sql[] =
    "CREATE TABLE pools (\n"
    "  snap_vm TEXT NOT NULL,\n"
    "  snap TEXT NOT NULL,\n"
    "  size INTEGER NOT NULL,\n"
    "  PRIMARY KEY (snap_vm, snap)\n"
    ");\n"
    "CREATE TABLE pool_vms (\n"
    "  vm TEXT PRIMARY KEY,\n"
    "  snap_vm TEXT NOT NULL,\n"
    "  snap TEXT NOT NULL\n"
    ");\n"
    "CREATE INDEX pool_vms_snap ON pool_vms (snap_vm, snap);\n"
    "CREATE TRIGGER vms_release_pool_vm AFTER DELETE ON vms BEGIN\n"
    "  DELETE FROM pool_vms WHERE vm = old.name;\n"
    "END;\n"
    "PRAGMA user_version = 8;\n";

/* Version 8 -> 9: who set a pool: the canonical path of the VMFile whose `up` set it (its `down`
 * removes it), NULL when it was set by hand (docs/vmfile.md "A warm pool"). */
static const char migrate_8_9_sql[] = "ALTER TABLE pools ADD COLUMN project TEXT;\n"
                                      "PRAGMA user_version = 9;\n";

static int exec_sql(store *s, const char *sql, const char *what, vmctl_error **reterr)
{
    int rc = sqlite3_exec(store_sqlite(s), sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : store_fail(s, rc, what, reterr);
}

/* A single integer from a one-row query. */
static int query_int(store *s, const char *sql, const char *what, int64_t *ret,
                     vmctl_error **reterr)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(store_sqlite(s), sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *ret = sqlite3_column_int64(st, 0);
            rc = SQLITE_OK;
        }
    }
    if (rc != SQLITE_OK) {
        int r = store_fail(s, rc, what, reterr);
        sqlite3_finalize(st);
        return r;
    }
    sqlite3_finalize(st);
    return 0;
}

/* Create the schema in an empty database; refuse one we do not know. */
int store_schema_ensure(store *s, const char *path, vmctl_error **reterr)
{
    int64_t version = 0, n_objects = 0;
    int r = query_int(s, "PRAGMA user_version", "reading the schema version", &version, reterr);
    if (r < 0)
        return r;
    if (version == STORE_SCHEMA_VERSION)
        return 0;

    if (version >= 1 && version < STORE_SCHEMA_VERSION) {
        r = store_tx_begin(s, reterr);
        if (r < 0)
            return r;
        r = query_int(s, "PRAGMA user_version", "reading the schema version", &version, reterr);
        int64_t from = version;
        if (r >= 0 && version >= 1 && version < STORE_SCHEMA_VERSION) {
            /* one step at a time, all in this transaction */
            int rc = version == 1 ? sqlite3_exec(store_sqlite(s), migrate_1_2_sql, NULL, NULL, NULL)
                                  : SQLITE_OK;
            if (rc == SQLITE_OK && version <= 2)
                rc = sqlite3_exec(store_sqlite(s), migrate_2_3_sql, NULL, NULL, NULL);
            if (rc == SQLITE_OK && version <= 3)
                rc = sqlite3_exec(store_sqlite(s), migrate_3_4_sql, NULL, NULL, NULL);
            if (rc == SQLITE_OK && version <= 4)
                rc = sqlite3_exec(store_sqlite(s), migrate_4_5_sql, NULL, NULL, NULL);
            if (rc == SQLITE_OK && version <= 5)
                rc = sqlite3_exec(store_sqlite(s), migrate_5_6_sql, NULL, NULL, NULL);
            if (rc == SQLITE_OK && version <= 6)
                rc = sqlite3_exec(store_sqlite(s), migrate_6_7_sql, NULL, NULL, NULL);
            if (rc == SQLITE_OK && version <= 7)
                rc = sqlite3_exec(store_sqlite(s), migrate_7_8_sql, NULL, NULL, NULL);
            if (rc == SQLITE_OK && version <= 8)
                rc = sqlite3_exec(store_sqlite(s), migrate_8_9_sql, NULL, NULL, NULL);
            if (rc == SQLITE_ERROR) {
                /* the old tables are not what that version had */
                r = err_make(reterr, VMCTL_E_STORE_CORRUPT, EBADMSG,
                             "cannot upgrade the store '%s' to schema version %d: %s", path,
                             STORE_SCHEMA_VERSION, sqlite3_errmsg(store_sqlite(s)));
                err_detail(reterr, "path", "%s", path);
                err_help(reterr,
                         "Restore '%s' from a backup, or move it aside and run `vmctl "
                         "doctor --fix` to adopt the VMs under vms/ into a new store",
                         path);
            } else if (rc != SQLITE_OK)
                r = store_fail(s, rc, "upgrading the schema", reterr);
        }
        if (r < 0) {
            store_tx_rollback(s);
            return r;
        }
        if (from >= 1 && from < STORE_SCHEMA_VERSION)
            return store_tx_commit(s, reterr);
        store_tx_rollback(s);
        if (version == STORE_SCHEMA_VERSION)
            return 0;
    }

    if (version == 0) {
        r = store_tx_begin(s, reterr);
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
            if (r >= 0 && n_objects == 0)
                r = exec_sql(s, migrate_7_8_sql, "creating the schema", reterr);
            if (r >= 0 && n_objects == 0)
                r = exec_sql(s, migrate_8_9_sql, "creating the schema", reterr);
        }
        if (r < 0) {
            store_tx_rollback(s);
            return r;
        }
        if (version == 0 && n_objects == 0)
            return store_tx_commit(s, reterr);
        store_tx_rollback(s);
        if (version == STORE_SCHEMA_VERSION)
            return 0;
    }

    if (version == 0)
        r = err_make(reterr, VMCTL_E_STORE_CORRUPT, EBADMSG,
                     "'%s' is a SQLite database but not a vmctl store (it has tables of its own "
                     "and no schema version)",
                     path);
    else
        r = err_make(reterr, VMCTL_E_STORE_CORRUPT, EBADMSG,
                     "the store '%s' has schema version %lld; this vmctl knows version %d", path,
                     (long long)version, STORE_SCHEMA_VERSION);
    err_detail(reterr, "path", "%s", path);
    err_detail_num(reterr, "schema_version", (double)version);
    err_help(reterr,
             "Use the vmctl that wrote this store (a newer one if the version is higher), or move "
             "'%s' aside and run `vmctl doctor --fix` to adopt the VMs under vms/ into a new "
             "store",
             path);
    return r;
}
