/* SPDX-License-Identifier: MIT */
/* The store: SQLite (WAL) at $VMCTL_HOME/vmctl.db. See docs/architecture.md for the schema.
 * Every write is one transaction; busy waits are bounded (store::locked past the bound). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <vmctl/vm.h>

typedef struct store store;

typedef struct store_vm {
    char *name;
    vmctl_vm_state state;
    char *config;       /* vm_spec JSON */
    pid_t pid;          /* QEMU pid or 0 */
    uint64_t pid_start; /* its start time (clock ticks since boot) */
    char *dir;          /* the VM directory */
    int64_t created_at; /* unix seconds */
    int64_t updated_at;
    bool complete;   /* false while create is still preparing the VM */
    pid_t owner_pid; /* the create that is preparing it */
    uint64_t owner_start;
    uint32_t cid; /* guest CID for AF_VSOCK, 0: none (column NULL) */
    /* Schema 4: the canonical path of the VMFile that made it, NULL: made by hand. */
    char *project;
    /* Its last provisioning (written by `up`/`provision`, provision.c). step: the failed step
     * (1-based) when failed, the steps done so far when pending. */
    vmctl_provision_state provision_state;
    unsigned provision_step;
    char *provision_error;  /* failed: the error's message, else NULL */
    int64_t provisioned_at; /* unix seconds of the last success, 0: never */
    char *provision_hash;   /* of the steps last run (provision.c), NULL: never */
} store_vm;

/* Guest CIDs: 0-2 are reserved (hypervisor, local, host), UINT32_MAX is "any". */
#define STORE_MIN_CID 3u
#define STORE_MAX_CID 0xfffffffeu

/* Opens (creating home with mkdir_p and the database with its schema when absent)
 * $home/vmctl.db. A file that is not a SQLite database, or one of an unknown schema version:
 * store::corrupt (details: path). One store per thread (SQLITE_OPEN_NOMUTEX); never carry an open
 * store across fork(). */
int store_open(const char *home, store **ret, vmctl_error **reterr);
/* An empty store in memory (a home opened without creating anything, that has no store yet). */
int store_open_empty(store **ret, vmctl_error **reterr);
void store_close(store *s);
static inline void store_closep(store **s)
{
    store_close(*s);
}
#define cleanup_store __attribute__((cleanup(store_closep)))

void store_vm_free(store_vm *v);
static inline void store_vm_freep(store_vm **v)
{
    store_vm_free(*v);
}
#define cleanup_store_vm __attribute__((cleanup(store_vm_freep)))
void store_vm_list_free(store_vm **list, size_t n);

const char *store_provision_state_name(vmctl_provision_state st);

/* vm::already_exists when the name is taken (also by an incomplete create). created_at 0 means
 * now; updated_at is always set to now. */
int store_vm_insert(store *s, const store_vm *v, vmctl_error **reterr);
/* The same, reserving the VM's host ports (table `ports`, unique per port and protocol) in the
 * same transaction: network::setup_failed with -EADDRINUSE (details port, protocol) when one is
 * already reserved, and nothing is inserted. Deleting the row releases them. */
int store_vm_insert_ports(store *s, const store_vm *v, const vmctl_port_forward *ports,
                          size_t n_ports, vmctl_error **reterr);
/* 1 and the VM's name in *ret_vm when host_port/proto is reserved, 0 (NULL) when free. */
int store_port_owner(store *s, uint16_t host_port, bool udp, char **ret_vm, vmctl_error **reterr);
/* vm::not_found when absent; store::corrupt (details vm, field) for a row we cannot read. */
int store_vm_get(store *s, const char *name, store_vm **ret, vmctl_error **reterr);
/* All rows ordered by name, incomplete ones included (the caller decides what to show). */
int store_vm_list(store *s, store_vm ***ret, size_t *n, vmctl_error **reterr);
/* Compare-and-set: only when the row is still in state `from` (with pid `from_pid` when
 * from_pid >= 0); vm::invalid_state (details vm, from = the state found, to) otherwise, with a
 * note when only the pid differed; vm::not_found when the row is gone. Does not consult the
 * transition table: the caller checks vm_transition() first. */
int store_vm_set_state(store *s, const char *name, vmctl_vm_state from, pid_t from_pid,
                       vmctl_vm_state to, pid_t pid, uint64_t pid_start, vmctl_error **reterr);
/* complete = 1 (create finished preparing the VM); vm::not_found when absent. */
int store_vm_set_complete(store *s, const char *name, vmctl_error **reterr);
/* Take over an incomplete row whose owner (dead_pid, dead_start) is dead: compare-and-set of the
 * owner to (pid, start), only while complete = 0. Returns 1 when this caller now owns the row
 * (it may remove the VM directory, then store_vm_delete()), 0 when the row is gone, complete or
 * already taken over by another process (leave it alone), < 0 on store errors. Without this, two
 * commands cleaning the same leftover, or a cleaner and a new create of the same name, could
 * remove each other's files. */
int store_vm_claim(store *s, const char *name, pid_t dead_pid, uint64_t dead_start, pid_t pid,
                   uint64_t start, vmctl_error **reterr);
/* vm::not_found when absent. */
int store_vm_delete(store *s, const char *name, vmctl_error **reterr);
/* Give the VM the smallest guest CID >= min (and >= 3) that no VM of the store holds, replacing
 * the one it had, in one transaction (the UNIQUE index on cid backs it: racing callers get
 * different CIDs). *ret gets it. vm::not_found when the row is gone; network::setup_failed when
 * no CID is left. The CID goes with the row (store_vm_delete). */
int store_vm_alloc_cid(store *s, const char *name, uint32_t min, uint32_t *ret,
                       vmctl_error **reterr);
/* The uid VM name's jailed hypervisor runs as: the one it has, else (alloc) the lowest free one
 * of [base, base + count), recorded in one transaction (the UNIQUE constraint backs it: racing
 * callers get different uids; the uid goes with the row). Without alloc, 0 when it has none.
 * jailer::failed when the range is full. */
int store_vm_jail_uid(store *s, const char *name, uint32_t base, uint32_t count, bool alloc,
                      uint32_t *ret, vmctl_error **reterr);
/* Record a provisioning result: state, step, error (NULL clears it), hash (NULL keeps the one
 * recorded); provisioned_at becomes now when state is ok. vm::not_found when absent. */
int store_vm_set_provision(store *s, const char *name, vmctl_provision_state state, unsigned step,
                           const char *error, const char *hash, vmctl_error **reterr);
/* Give a VM made by hand (project NULL) to project; no-op when it has it already.
 * vm::already_exists (details vm, project) when another project owns it, vm::not_found. */
int store_vm_set_project(store *s, const char *name, const char *project, vmctl_error **reterr);

/* The IP pool of `--net tap` (table `leases`, docs/networking.md): one link per VM. */
typedef struct store_lease {
    char *vm;
    uint32_t subnet; /* the link's network address, host byte order */
    unsigned prefix; /* its length (30) */
    char *ifname;    /* the VM's TAP on the host */
    char *mac;       /* the guest's MAC, "52:54:..." */
} store_lease;
void store_lease_clear(store_lease *l);
void store_lease_list_free(store_lease *l, size_t n);
/* Names of a new lease: the TAP's (< 16 bytes) and the MAC's, from the VM and its link. */
typedef void (*store_lease_name_fn)(const char *vm, uint32_t subnet, char ifname[16], char mac[18]);
/* The VM's lease, or (one transaction under the write lock, UNIQUE constraints behind it) the
 * lowest free /link_prefix of pool/pool_prefix: network::setup_failed (EADDRNOTAVAIL, detail
 * `pool`) when every one is leased. Deleting the VM's row releases it. */
int store_lease_alloc(store *s, const char *vm, uint32_t pool, unsigned pool_prefix,
                      unsigned link_prefix, store_lease_name_fn name_fn, store_lease *ret,
                      vmctl_error **reterr);
/* 1 and *ret when the VM has a lease, 0 when not. */
int store_lease_get(store *s, const char *vm, store_lease *ret, vmctl_error **reterr);
/* Every lease, by address. */
int store_lease_list(store *s, store_lease **ret, size_t *n, vmctl_error **reterr);
/* ---------- for the store's other files (store-snapshot.c) ---------- */
struct sqlite3;
struct sqlite3 *store_sqlite(store *s);
/* The error for a failing SQLite result code rc while doing `what`. */
int store_fail(store *s, int rc, const char *what, vmctl_error **reterr);
int store_tx_begin(store *s, vmctl_error **reterr);
int store_tx_commit(store *s, vmctl_error **reterr);
void store_tx_rollback(store *s);
/* store-schema.c: create the schema of an empty database, upgrade an older one, refuse one we
 * do not know (path: for messages). */
int store_schema_ensure(store *s, const char *path, vmctl_error **reterr);
