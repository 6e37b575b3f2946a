/* SPDX-License-Identifier: MIT */
/* The SQLite store (real SQLite, real files in a temp dir, real processes racing), plus the
 * vm_spec JSON form stored in its config column and port-forward parsing. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "error.h"
#include "store.h"
#include "store-snapshot.h"
#include "util/util.h"
#include "vm-spec.h"

/* --- fixtures --- */

static int setup_home(void **state)
{
    char tmpl[] = "/tmp/test-store-XXXXXX";
    if (!mkdtemp(tmpl))
        return -1;
    /* A subdirectory that does not exist yet: store_open must create it. */
    *state = str_printf("%s/home", tmpl);
    return *state ? 0 : -1;
}

static int teardown_home(void **state)
{
    char *home = *state;
    char *top = strdup(home);
    *strrchr(top, '/') = 0;
    int r = rm_rf(top);
    free(top);
    free(home);
    return r < 0 ? -1 : 0;
}

static char *db_path(const char *home)
{
    return str_printf("%s/vmctl.db", home);
}

static char *spec_json(const char *name)
{
    char *env[] = {"A=1", "B=two words", NULL};
    vmctl_port_forward ports[] = {{2222, 22, false}, {0, 53, true}};
    vm_spec s = {
        .name = (char *)name,
        .backend = "qemu",
        .machine = "microvm",
        .accel = "tcg",
        .vcpus = 2,
        .memory_mib = 256,
        .image = "default",
        .kernel = "/k/vmlinux",
        .net = "none",
        .ports = ports,
        .n_ports = 2,
        .env = env,
        .agent = true,
    };
    char *out = NULL;
    assert_int_equal(vm_spec_to_json(&s, &out), 0);
    return out;
}

static void insert_vm(store *s, const char *name, vmctl_vm_state st, vmctl_error **reterr,
                      int expect)
{
    cleanup_free char *config = spec_json(name);
    cleanup_free char *dir = str_printf("/nonexistent/vms/%s", name);
    store_vm v = {
        .name = (char *)name,
        .state = st,
        .config = config,
        .dir = dir,
        .owner_pid = getpid(),
        .owner_start = 4242,
    };
    int r = store_vm_insert(s, &v, reterr);
    if (r != expect)
        fail_msg("insert '%s': expected %d, got %d (%s)", name, expect, r,
                 *reterr ? vmctl_error_get_message(*reterr) : "no error");
}

static void assert_code(const vmctl_error *e, const char *code)
{
    assert_non_null(e);
    if (strcmp(vmctl_error_get_code(e), code) != 0)
        fail_msg("expected %s, got %s: %s", code, vmctl_error_get_code(e),
                 vmctl_error_get_message(e));
}

static void make_sqlite(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* --- basic rows --- */

static void test_insert_get_list_delete(void **state)
{
    const char *home = *state;
    cleanup_error vmctl_error *err = NULL;
    {
        cleanup_store store *s = NULL;
        assert_int_equal(store_open(home, &s, &err), 0);
        assert_null(err);

        uint64_t before = realtime_usec() / 1000000;
        insert_vm(s, "b", VMCTL_VM_CREATED, &err, 0);
        insert_vm(s, "a", VMCTL_VM_STOPPED, &err, 0);

        cleanup_store_vm store_vm *v = NULL;
        assert_int_equal(store_vm_get(s, "a", &v, &err), 0);
        assert_string_equal(v->name, "a");
        assert_int_equal(v->state, VMCTL_VM_STOPPED);
        assert_string_equal(v->dir, "/nonexistent/vms/a");
        assert_int_equal(v->pid, 0);
        assert_int_equal(v->pid_start, 0);
        assert_false(v->complete);
        assert_int_equal(v->owner_pid, getpid());
        assert_int_equal(v->owner_start, 4242);
        assert_true(v->created_at >= (int64_t)before && v->created_at <= (int64_t)before + 5);
        assert_true(v->updated_at >= v->created_at);
        cleanup_free char *want = spec_json("a");
        assert_string_equal(v->config, want);

        store_vm **list = NULL;
        size_t n = 0;
        assert_int_equal(store_vm_list(s, &list, &n, &err), 0);
        assert_int_equal(n, 2);
        assert_string_equal(list[0]->name, "a");
        assert_string_equal(list[1]->name, "b");
        assert_int_equal(list[1]->state, VMCTL_VM_CREATED);
        store_vm_list_free(list, n);

        assert_int_equal(store_vm_set_complete(s, "a", &err), 0);
        store_vm_free(TAKE_PTR(v));
        assert_int_equal(store_vm_get(s, "a", &v, &err), 0);
        assert_true(v->complete);

        assert_int_equal(store_vm_delete(s, "a", &err), 0);
        assert_int_equal(store_vm_get(s, "a", &v, &err), -ENOENT);
        assert_code(err, "vm_manager::vm::not_found");
        assert_string_equal(vmctl_error_find_detail(err, "vm"), "a");
        assert_int_equal(store_vm_delete(s, "a", &err), -ENOENT);
        assert_code(err, "vm_manager::vm::not_found");
        assert_int_equal(store_vm_set_complete(s, "a", &err), -ENOENT);
        assert_code(err, "vm_manager::vm::not_found");
    }

    /* Reopen: the row is still there; the file is a WAL database with our schema version. */
    {
        cleanup_store store *s = NULL;
        assert_int_equal(store_open(home, &s, &err), 0);
        store_vm **list = NULL;
        size_t n = 0;
        assert_int_equal(store_vm_list(s, &list, &n, &err), 0);
        assert_int_equal(n, 1);
        assert_string_equal(list[0]->name, "b");
        store_vm_list_free(list, n);
    }
    cleanup_free char *path = db_path(home);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 9);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void test_duplicate(void **state)
{
    cleanup_error vmctl_error *err = NULL;
    cleanup_store store *s = NULL;
    assert_int_equal(store_open(*state, &s, &err), 0);
    insert_vm(s, "dup", VMCTL_VM_RUNNING, &err, 0);
    insert_vm(s, "dup", VMCTL_VM_CREATED, &err, -EEXIST);
    assert_code(err, "vm_manager::vm::already_exists");
    assert_string_equal(vmctl_error_find_detail(err, "vm"), "dup");
    assert_int_equal(vmctl_error_get_errno(err), EEXIST);

    /* The first row is untouched and the failed insert left no transaction open. */
    cleanup_store_vm store_vm *v = NULL;
    assert_int_equal(store_vm_get(s, "dup", &v, &err), 0);
    assert_int_equal(v->state, VMCTL_VM_RUNNING);
    insert_vm(s, "other", VMCTL_VM_CREATED, &err, 0);
}

/* The store holds --env values: 0600 under any umask, its WAL and shared memory too, and a
 * store made world-readable before is narrowed. */
static void test_file_modes(void **state)
{
    mode_t old = umask(0);
    cleanup_free char *db = str_printf("%s/vmctl.db", (char *)*state);
    cleanup_free char *wal = str_printf("%s/vmctl.db-wal", (char *)*state);
    cleanup_free char *shm = str_printf("%s/vmctl.db-shm", (char *)*state);
    struct stat st;
    {
        cleanup_error vmctl_error *err = NULL;
        cleanup_store store *s = NULL;
        assert_int_equal(store_open(*state, &s, &err), 0);
        insert_vm(s, "m", VMCTL_VM_CREATED, &err, 0);
        assert_int_equal(stat(db, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        assert_int_equal(stat(wal, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        assert_int_equal(stat(shm, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
    }
    assert_int_equal(chmod(db, 0644), 0);
    {
        cleanup_error vmctl_error *err = NULL;
        cleanup_store store *s = NULL;
        assert_int_equal(store_open(*state, &s, &err), 0);
        assert_int_equal(stat(db, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
    }
    umask(old);
}

static void test_not_found(void **state)
{
    cleanup_error vmctl_error *err = NULL;
    cleanup_store store *s = NULL;
    assert_int_equal(store_open(*state, &s, &err), 0);
    store_vm *v = NULL;
    assert_int_equal(store_vm_get(s, "ghost", &v, &err), -ENOENT);
    assert_null(v);
    assert_code(err, "vm_manager::vm::not_found");
    assert_string_equal(vmctl_error_find_detail(err, "vm"), "ghost");

    store_vm **list = NULL;
    size_t n = 99;
    assert_int_equal(store_vm_list(s, &list, &n, &err), 0);
    assert_int_equal(n, 0);
    store_vm_list_free(list, n);
}

/* --- compare-and-set --- */

static void test_cas(void **state)
{
    cleanup_error vmctl_error *err = NULL;
    cleanup_store store *s = NULL;
    assert_int_equal(store_open(*state, &s, &err), 0);
    insert_vm(s, "m", VMCTL_VM_CREATED, &err, 0);

    /* created -> running, recording the QEMU pid. */
    assert_int_equal(
        store_vm_set_state(s, "m", VMCTL_VM_CREATED, -1, VMCTL_VM_RUNNING, 1234, 777, &err), 0);
    cleanup_store_vm store_vm *v = NULL;
    assert_int_equal(store_vm_get(s, "m", &v, &err), 0);
    assert_int_equal(v->state, VMCTL_VM_RUNNING);
    assert_int_equal(v->pid, 1234);
    assert_int_equal(v->pid_start, 777);

    /* A second "start" from created loses: the row is running now. */
    vmctl_error_free(TAKE_PTR(err));
    assert_int_equal(
        store_vm_set_state(s, "m", VMCTL_VM_CREATED, -1, VMCTL_VM_RUNNING, 99, 1, &err), -EBUSY);
    assert_code(err, "vm_manager::vm::invalid_state");
    assert_string_equal(vmctl_error_find_detail(err, "vm"), "m");
    assert_string_equal(vmctl_error_find_detail(err, "from"), "running");
    assert_string_equal(vmctl_error_find_detail(err, "to"), "running");

    /* Right state, wrong pid (QEMU was replaced meanwhile): refused, with a note. */
    vmctl_error_free(TAKE_PTR(err));
    assert_int_equal(
        store_vm_set_state(s, "m", VMCTL_VM_RUNNING, 999, VMCTL_VM_STOPPED, 0, 0, &err), -EBUSY);
    assert_code(err, "vm_manager::vm::invalid_state");
    assert_string_equal(vmctl_error_find_detail(err, "from"), "running");
    assert_string_equal(vmctl_error_find_detail(err, "to"), "stopped");
    assert_int_equal(vmctl_error_get_n_notes(err), 1);
    assert_non_null(strstr(vmctl_error_get_note(err, 0), "1234"));
    store_vm_free(TAKE_PTR(v));
    assert_int_equal(store_vm_get(s, "m", &v, &err), 0);
    assert_int_equal(v->state, VMCTL_VM_RUNNING);
    assert_int_equal(v->pid, 1234);

    /* Right state and pid: wins. */
    vmctl_error_free(TAKE_PTR(err));
    assert_int_equal(
        store_vm_set_state(s, "m", VMCTL_VM_RUNNING, 1234, VMCTL_VM_PAUSED, 1234, 777, &err), 0);
    assert_null(err);
    /* Two stops racing: the first wins, the second sees stopped. */
    assert_int_equal(
        store_vm_set_state(s, "m", VMCTL_VM_PAUSED, 1234, VMCTL_VM_STOPPED, 0, 0, &err), 0);
    assert_int_equal(
        store_vm_set_state(s, "m", VMCTL_VM_PAUSED, 1234, VMCTL_VM_STOPPED, 0, 0, &err), -EBUSY);
    assert_string_equal(vmctl_error_find_detail(err, "from"), "stopped");
    assert_string_equal(vmctl_error_find_detail(err, "to"), "stopped");
    store_vm_free(TAKE_PTR(v));
    assert_int_equal(store_vm_get(s, "m", &v, &err), 0);
    assert_int_equal(v->state, VMCTL_VM_STOPPED);
    assert_int_equal(v->pid, 0);

    /* Gone: not_found, not invalid_state. */
    assert_int_equal(
        store_vm_set_state(s, "nope", VMCTL_VM_STOPPED, -1, VMCTL_VM_RUNNING, 1, 1, &err), -ENOENT);
    assert_code(err, "vm_manager::vm::not_found");
    assert_string_equal(vmctl_error_find_detail(err, "vm"), "nope");

    /* No transaction left open by the failures: writes still work. */
    assert_int_equal(store_vm_delete(s, "m", &err), 0);
}

/* --- several processes at once --- */

enum { RACE_OK = 0, RACE_EXISTS = 10, RACE_LOCKED, RACE_CORRUPT, RACE_OPEN, RACE_OTHER };

enum race_op { RACE_INSERT, RACE_CLAIM, RACE_CID };

/* The stale owner the claim race takes over from. */
#define DEAD_PID   999999
#define DEAD_START 31337

static int race_child(const char *home, const char *name, int barrier, enum race_op op)
{
    char c;
    /* Wait until the parent releases everyone at once (EOF on the pipe). */
    while (read(barrier, &c, 1) < 0 && errno == EINTR)
        ;
    vmctl_error *err = NULL;
    store *s = NULL;
    int code = RACE_OK;
    if (store_open(home, &s, &err) < 0) {
        code = RACE_OPEN;
    } else if (op == RACE_CLAIM) {
        int r = store_vm_claim(s, name, DEAD_PID, DEAD_START, getpid(), 1, &err);
        code = r == 1 ? RACE_OK : r == 0 ? RACE_EXISTS : RACE_OTHER;
    } else {
        cleanup_free char *config = spec_json(name);
        store_vm v = {.name = (char *)name, .config = config, .dir = "/nonexistent"};
        uint32_t cid = 0;
        if (store_vm_insert(s, &v, &err) < 0 ||
            (op == RACE_CID && store_vm_alloc_cid(s, name, STORE_MIN_CID, &cid, &err) < 0))
            code = RACE_OTHER;
    }
    if (err) {
        const char *k = vmctl_error_get_code(err);
        if (streq(k, "vm_manager::vm::already_exists"))
            code = RACE_EXISTS;
        else if (streq(k, "vm_manager::store::locked"))
            code = RACE_LOCKED;
        else if (streq(k, "vm_manager::store::corrupt"))
            code = RACE_CORRUPT;
        if (code != RACE_EXISTS)
            fprintf(stderr, "child %d: %s: %s\n", (int)getpid(), k, vmctl_error_get_message(err));
    }
    store_close(s);
    vmctl_error_free(err);
    return code;
}

/* Fork n processes that each open the store in `home` and insert names[i]; collect exit codes. */
static void race(const char *home, const char *const *names, int n, int *codes, enum race_op op)
{
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    pid_t pids[16];
    assert_true(n <= 16);
    for (int i = 0; i < n; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            close(p[1]);
            _exit(race_child(home, names[i], p[0], op));
        }
    }
    close(p[0]);
    close(p[1]); /* go */

    uint64_t deadline = now_usec() + 60 * 1000000ULL;
    int left = n;
    for (int i = 0; i < n; i++)
        codes[i] = -1;
    while (left > 0) {
        for (int i = 0; i < n; i++) {
            if (codes[i] != -1)
                continue;
            int status;
            pid_t w = waitpid(pids[i], &status, WNOHANG);
            if (w == pids[i]) {
                codes[i] = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                left--;
            }
        }
        if (left > 0 && now_usec() > deadline) {
            for (int i = 0; i < n; i++)
                if (codes[i] == -1) {
                    kill(pids[i], SIGKILL);
                    waitpid(pids[i], NULL, 0);
                }
            fail_msg("racing inserts did not finish within 60 s");
        }
        if (left > 0)
            sleep_usec(5000);
    }
}

static size_t count_rows(const char *home)
{
    cleanup_error vmctl_error *err = NULL;
    cleanup_store store *s = NULL;
    assert_int_equal(store_open(home, &s, &err), 0);
    store_vm **list = NULL;
    size_t n = 0;
    assert_int_equal(store_vm_list(s, &list, &n, &err), 0);
    store_vm_list_free(list, n);
    return n;
}

/* Several rounds, each on a fresh home: creating the database and schema races too. */
#define RACE_ROUNDS 10

static void test_concurrent_distinct(void **state)
{
    const char *const names[8] = {"p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"};
    for (int round = 0; round < RACE_ROUNDS; round++) {
        cleanup_free char *home = str_printf("%s/distinct%d", (const char *)*state, round);
        int codes[8];
        race(home, names, 8, codes, RACE_INSERT);
        for (int i = 0; i < 8; i++)
            if (codes[i] != RACE_OK)
                fail_msg("round %d: process %d exited %d", round, i, codes[i]);
        assert_int_equal(count_rows(home), 8);
    }
}

static void test_concurrent_same(void **state)
{
    const char *const names[8] = {"same", "same", "same", "same", "same", "same", "same", "same"};
    for (int round = 0; round < RACE_ROUNDS; round++) {
        cleanup_free char *home = str_printf("%s/same%d", (const char *)*state, round);
        int codes[8], ok = 0, exists = 0;
        race(home, names, 8, codes, RACE_INSERT);
        for (int i = 0; i < 8; i++) {
            if (codes[i] == RACE_OK)
                ok++;
            else if (codes[i] == RACE_EXISTS)
                exists++;
            else
                fail_msg("round %d: process %d exited %d", round, i, codes[i]);
        }
        assert_int_equal(ok, 1);
        assert_int_equal(exists, 7);
        assert_int_equal(count_rows(home), 1);
    }
}

/* Eight creates allocating guest CIDs at once: all different, and the smallest free ones. */
static void test_concurrent_cid(void **state)
{
    const char *const names[8] = {"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"};
    for (int round = 0; round < RACE_ROUNDS; round++) {
        cleanup_free char *home = str_printf("%s/cid%d", (const char *)*state, round);
        int codes[8];
        race(home, names, 8, codes, RACE_CID);
        for (int i = 0; i < 8; i++)
            if (codes[i] != RACE_OK)
                fail_msg("round %d: process %d exited %d", round, i, codes[i]);
        cleanup_error vmctl_error *err = NULL;
        cleanup_store store *s = NULL;
        assert_int_equal(store_open(home, &s, &err), 0);
        store_vm **list = NULL;
        size_t n = 0;
        assert_int_equal(store_vm_list(s, &list, &n, &err), 0);
        assert_int_equal(n, 8);
        unsigned seen = 0;
        for (size_t i = 0; i < n; i++) {
            uint32_t c = list[i]->cid;
            if (c < 3 || c > 10 || (seen & (1u << c)))
                fail_msg("round %d: %s got CID %u (seen mask %#x)", round, list[i]->name, c, seen);
            seen |= 1u << c;
        }
        store_vm_list_free(list, n);
    }
}

static uint32_t cid_of(store *s, const char *name)
{
    cleanup_error vmctl_error *err = NULL;
    cleanup_store_vm store_vm *v = NULL;
    assert_int_equal(store_vm_get(s, name, &v, &err), 0);
    return v->cid;
}

static uint32_t alloc_cid(store *s, const char *name, uint32_t min)
{
    cleanup_error vmctl_error *err = NULL;
    uint32_t cid = 0;
    if (store_vm_alloc_cid(s, name, min, &cid, &err) != 0)
        fail_msg("alloc for '%s': %s", name, vmctl_error_get_message(err));
    assert_int_equal(cid_of(s, name), cid);
    return cid;
}

static void lease_names(const char *vm, uint32_t subnet, char ifname[16], char mac[18])
{
    snprintf(ifname, 16, "vm-%.6s-%05x", vm, (subnet >> 2) & 0xfffff);
    snprintf(mac, 18, "52:54:%02x:%02x:%02x:%02x", subnet >> 24, (subnet >> 16) & 0xff,
             (subnet >> 8) & 0xff, (subnet + 2) & 0xff);
}

static uint32_t lease(store *s, const char *name, uint32_t pool, unsigned prefix, int expect)
{
    cleanup_error vmctl_error *err = NULL;
    store_lease l = {};
    int r = store_lease_alloc(s, name, pool, prefix, 30, lease_names, &l, &err);
    if (r != expect)
        fail_msg("lease '%s': expected %d, got %d (%s)", name, expect, r,
                 err ? vmctl_error_get_message(err) : "no error");
    if (r < 0) {
        assert_code(err, "vm_manager::network::setup_failed");
        assert_non_null(vmctl_error_find_detail(err, "pool"));
        return 0;
    }
    uint32_t subnet = l.subnet;
    assert_int_equal(l.prefix, 30);
    store_lease_clear(&l);
    return subnet;
}

/* The IP pool: lowest free /30 first, a VM keeps its lease, a deleted row frees it, a full pool
 * is network::setup_failed naming the pool. */
static void test_leases(void **state)
{
    cleanup_error vmctl_error *err = NULL;
    cleanup_store store *s = NULL;
    assert_int_equal(store_open(*state, &s, &err), 0);
    const uint32_t pool = 0x0a580000; /* 10.88.0.0/28: four links */
    const char *names[] = {"a", "b", "c", "d", "e"};
    for (int i = 0; i < 5; i++)
        insert_vm(s, names[i], VMCTL_VM_CREATED, &err, 0);
    assert_int_equal(lease(s, "a", pool, 28, 0), pool);
    assert_int_equal(lease(s, "b", pool, 28, 0), pool + 4);
    assert_int_equal(lease(s, "a", pool, 28, 0), pool); /* its own, again */
    assert_int_equal(lease(s, "c", pool, 28, 0), pool + 8);
    assert_int_equal(lease(s, "d", pool, 28, 0), pool + 12);
    lease(s, "e", pool, 28, -EADDRNOTAVAIL); /* exhausted */
    assert_int_equal(store_vm_delete(s, "b", &err), 0);
    assert_int_equal(lease(s, "e", pool, 28, 0), pool + 4); /* b's, freed with its row */
    store_lease l = {};
    assert_int_equal(store_lease_get(s, "b", &l, &err), 0);
    assert_int_equal(store_lease_get(s, "e", &l, &err), 1);
    assert_string_equal(l.ifname, "vm-e-60001");
    store_lease_clear(&l);
    store_lease *all = NULL;
    size_t n = 0;
    assert_int_equal(store_lease_list(s, &all, &n, &err), 0);
    assert_int_equal(n, 4);
    for (size_t i = 1; i < n; i++)
        assert_true(all[i].subnet > all[i - 1].subnet);
    store_lease_list_free(all, n);
}

static void test_cid(void **state)
{
    cleanup_error vmctl_error *err = NULL;
    cleanup_store store *s = NULL;
    assert_int_equal(store_open(*state, &s, &err), 0);
    insert_vm(s, "a", VMCTL_VM_CREATED, &err, 0);
    insert_vm(s, "b", VMCTL_VM_CREATED, &err, 0);
    insert_vm(s, "c", VMCTL_VM_CREATED, &err, 0);
    assert_int_equal(cid_of(s, "a"), 0);       /* none until allocated */
    assert_int_equal(alloc_cid(s, "a", 0), 3); /* 0-2 are reserved */
    assert_int_equal(alloc_cid(s, "b", 3), 4);
    assert_int_equal(alloc_cid(s, "b", 10), 10); /* moved: 4 is free again */
    assert_int_equal(alloc_cid(s, "c", 3), 4);
    assert_int_equal(alloc_cid(s, "c", 9), 9);
    assert_int_equal(alloc_cid(s, "c", 9), 11); /* b holds 10 */

    /* the row's CID goes with the row */
    assert_int_equal(store_vm_delete(s, "a", &err), 0);
    insert_vm(s, "d", VMCTL_VM_CREATED, &err, 0);
    assert_int_equal(alloc_cid(s, "d", 3), 3);

    /* an insert with a CID another VM holds */
    cleanup_free char *config = spec_json("e");
    store_vm v = {.name = "e", .config = config, .dir = "/nonexistent", .cid = 10};
    assert_int_equal(store_vm_insert(s, &v, &err), -EADDRINUSE);
    assert_code(err, "vm_manager::network::setup_failed");
    vmctl_error_free(err);
    err = NULL;
    v.cid = 12;
    assert_int_equal(store_vm_insert(s, &v, &err), 0);
    assert_int_equal(cid_of(s, "e"), 12);

    /* the UNIQUE index holds also against writes that bypass the allocator */
    cleanup_free char *path = db_path(*state);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "UPDATE vms SET cid = 3 WHERE name = 'b'", NULL, NULL, NULL),
                     SQLITE_CONSTRAINT);
    sqlite3_close(db);

    uint32_t cid = 0;
    assert_int_equal(store_vm_alloc_cid(s, "nobody", 3, &cid, &err), -ENOENT);
    assert_code(err, "vm_manager::vm::not_found");
}

/* Jail uids: the lowest free one of the range, kept across calls, unique (the UNIQUE constraint
 * backs it), freed with the row, jailer::failed when the range is full. */
static void test_jail_uid(void **state)
{
    cleanup_error vmctl_error *err = NULL;
    cleanup_store store *s = NULL;
    assert_int_equal(store_open(*state, &s, &err), 0);
    insert_vm(s, "a", VMCTL_VM_CREATED, &err, 0);
    insert_vm(s, "b", VMCTL_VM_CREATED, &err, 0);
    insert_vm(s, "c", VMCTL_VM_CREATED, &err, 0);
    uint32_t ua = 0, ub = 0, uc = 0, again = 0;
    assert_int_equal(store_vm_jail_uid(s, "a", 5000, 2, true, &ua, &err), 0);
    assert_int_equal(store_vm_jail_uid(s, "b", 5000, 2, true, &ub, &err), 0);
    assert_int_equal(ua, 5000);
    assert_int_equal(ub, 5001);
    assert_int_equal(store_vm_jail_uid(s, "a", 5000, 2, true, &again, &err), 0);
    assert_int_equal(again, 5000);
    assert_int_equal(store_vm_jail_uid(s, "c", 5000, 2, true, &uc, &err), -EUSERS);
    assert_code(err, "vm_manager::jailer::failed");
    vmctl_error_free(err);
    err = NULL;
    assert_int_equal(store_vm_delete(s, "a", &err), 0);
    assert_int_equal(store_vm_jail_uid(s, "c", 5000, 2, true, &uc, &err), 0);
    assert_int_equal(uc, 5000);
}

/* Stores of schema version 3 (no project and provisioning columns), 2 (no cid column either) and
 * 1 (no ports table either) are upgraded in place: rows kept without a CID and without a
 * project, ports kept or filled in, CIDs allocatable afterwards. */
#define V2_VMS_SQL                                                                                 \
    "CREATE TABLE vms (name TEXT PRIMARY KEY, state TEXT NOT NULL, config TEXT NOT NULL, "         \
    "pid INTEGER NOT NULL DEFAULT 0, pid_start INTEGER NOT NULL DEFAULT 0, dir TEXT NOT NULL, "    \
    "created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, complete INTEGER NOT NULL "         \
    "DEFAULT 0, owner_pid INTEGER NOT NULL DEFAULT 0, owner_start INTEGER NOT NULL DEFAULT 0);"
#define V2_PORTS_SQL                                                                               \
    "CREATE TABLE ports (host_port INTEGER NOT NULL, proto TEXT NOT NULL, vm TEXT NOT NULL, "      \
    "guest_port INTEGER NOT NULL, PRIMARY KEY (host_port, proto));"                                \
    "CREATE INDEX ports_vm ON ports (vm);"                                                         \
    "CREATE TRIGGER vms_release_ports AFTER DELETE ON vms BEGIN "                                  \
    "DELETE FROM ports WHERE vm = old.name; END;"
/* What schema 3 added to 2. */
#define V3_SQL "ALTER TABLE vms ADD COLUMN cid INTEGER; CREATE UNIQUE INDEX vms_cid ON vms (cid);"

static void test_migrate(void **state)
{
    for (int version = 1; version <= 3; version++) {
        cleanup_free char *home = str_printf("%s/v%d", (const char *)*state, version);
        assert_int_equal(mkdir_p(home, 0700), 0);
        cleanup_free char *path = db_path(home);
        cleanup_free char *config = spec_json("old"); /* forwards 2222->22/tcp, 0->53/udp */
        cleanup_free char *sql = str_printf(
            "%s%s%s INSERT INTO vms (name, state, config, pid, pid_start, dir, created_at, "
            "updated_at, complete, owner_pid, owner_start) VALUES ('old', 'stopped', '%s', 0, 0, "
            "'/x/old', 1, 1, 1, 0, 0); %s PRAGMA user_version = %d;",
            V2_VMS_SQL, version >= 2 ? V2_PORTS_SQL : "", version == 3 ? V3_SQL : "", config,
            version >= 2 ? "INSERT INTO ports VALUES (2222, 'tcp', 'old', 22);" : "", version);
        make_sqlite(path, sql);

        cleanup_error vmctl_error *err = NULL;
        cleanup_store store *s = NULL;
        if (store_open(home, &s, &err) != 0)
            fail_msg("v%d: %s", version, vmctl_error_get_message(err));
        assert_int_equal(cid_of(s, "old"), 0);
        char *owner = NULL;
        assert_int_equal(store_port_owner(s, 2222, false, &owner, &err), 1);
        assert_string_equal(owner, "old");
        free(owner);
        insert_vm(s, "new", VMCTL_VM_CREATED, &err, 0);
        assert_int_equal(alloc_cid(s, "new", 3), 3);
        assert_int_equal(alloc_cid(s, "old", 3), 4);

        sqlite3 *db = NULL;
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        sqlite3_stmt *st = NULL;
        assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(st, 0), 9);
        sqlite3_finalize(st);
        /* 7 -> 8: the pool tables are there; 8 -> 9: with the project column */
        assert_int_equal(sqlite3_exec(db,
                                      "SELECT snap_vm, snap, size, project FROM pools; SELECT vm, "
                                      "snap_vm, snap FROM pool_vms",
                                      NULL, NULL, NULL),
                         SQLITE_OK);
        /* 4 -> 5: the leases table is there */
        assert_int_equal(sqlite3_exec(db, "SELECT vm, subnet, prefix, ifname, mac FROM leases",
                                      NULL, NULL, NULL),
                         SQLITE_OK);
        assert_int_equal(
            sqlite3_exec(db, "UPDATE vms SET cid = 3 WHERE name = 'old'", NULL, NULL, NULL),
            SQLITE_CONSTRAINT);
        sqlite3_close(db);

        /* Schema 4: the old VM has no project (made by hand, as far as up is concerned) and
         * was never provisioned; both can be recorded now. */
        {
            cleanup_store_vm store_vm *v = NULL;
            assert_int_equal(store_vm_get(s, "old", &v, &err), 0);
            assert_null(v->project);
            assert_int_equal(v->provision_state, VMCTL_PROVISION_NONE);
            assert_int_equal(v->provision_step, 0);
            assert_null(v->provision_error);
            assert_int_equal(v->provisioned_at, 0);
            assert_null(v->provision_hash);
        }
        /* Schema 5: the old VM has no jail uid yet; one is allocated at its next start */
        {
            uint32_t uid = 1;
            assert_int_equal(store_vm_jail_uid(s, "old", 2000000000u, 10, false, &uid, &err), 0);
            assert_int_equal(uid, 0);
            assert_int_equal(store_vm_jail_uid(s, "old", 2000000000u, 10, true, &uid, &err), 0);
            assert_int_equal(uid, 2000000000u);
        }
        assert_int_equal(store_vm_set_project(s, "old", "/p/VMFile.kdl", &err), 0);
        assert_int_equal(
            store_vm_set_provision(s, "old", VMCTL_PROVISION_FAILED, 2, "boom", "abcd", &err), 0);
        /* opening it again changes nothing */
        store_close(s);
        s = NULL;
        assert_int_equal(store_open(home, &s, &err), 0);
        assert_int_equal(cid_of(s, "old"), 4);
        cleanup_store_vm store_vm *v = NULL;
        assert_int_equal(store_vm_get(s, "old", &v, &err), 0);
        assert_string_equal(v->project, "/p/VMFile.kdl");
        assert_int_equal(v->provision_state, VMCTL_PROVISION_FAILED);
        assert_int_equal(v->provision_step, 2);
        assert_string_equal(v->provision_error, "boom");
        assert_string_equal(v->provision_hash, "abcd");
    }
}

/* Schema 4: the project goes in with the row; provisioning results are recorded and read back;
 * a VM is given to a project only while it has none (compare-and-set). */
static void test_project_provision(void **state)
{
    cleanup_error vmctl_error *err = NULL;
    cleanup_store store *s = NULL;
    assert_int_equal(store_open(*state, &s, &err), 0);
    cleanup_free char *config = spec_json("p");
    store_vm row = {.name = "p", .config = config, .dir = "/d/p", .project = "/a/VMFile.kdl"};
    assert_int_equal(store_vm_insert(s, &row, &err), 0);
    insert_vm(s, "hand", VMCTL_VM_CREATED, &err, 0);

    cleanup_store_vm store_vm *v = NULL;
    assert_int_equal(store_vm_get(s, "p", &v, &err), 0);
    assert_string_equal(v->project, "/a/VMFile.kdl");
    assert_int_equal(v->provision_state, VMCTL_PROVISION_NONE);

    assert_int_equal(store_vm_set_provision(s, "p", VMCTL_PROVISION_PENDING, 0, NULL, "h1", &err),
                     0);
    assert_int_equal(
        store_vm_set_provision(s, "p", VMCTL_PROVISION_FAILED, 3, "step 3 failed", NULL, &err), 0);
    store_vm_free(TAKE_PTR(v));
    assert_int_equal(store_vm_get(s, "p", &v, &err), 0);
    assert_int_equal(v->provision_state, VMCTL_PROVISION_FAILED);
    assert_int_equal(v->provision_step, 3);
    assert_string_equal(v->provision_error, "step 3 failed");
    assert_string_equal(v->provision_hash, "h1"); /* NULL keeps it */
    assert_int_equal(v->provisioned_at, 0);

    assert_int_equal(store_vm_set_provision(s, "p", VMCTL_PROVISION_OK, 0, NULL, NULL, &err), 0);
    store_vm_free(TAKE_PTR(v));
    assert_int_equal(store_vm_get(s, "p", &v, &err), 0);
    assert_int_equal(v->provision_state, VMCTL_PROVISION_OK);
    assert_null(v->provision_error);
    assert_true(v->provisioned_at > 0);
    assert_int_equal(store_vm_set_provision(s, "ghost", VMCTL_PROVISION_OK, 0, NULL, NULL, &err),
                     -ENOENT);
    assert_code(err, "vm_manager::vm::not_found");
    vmctl_error_free(TAKE_PTR(err));

    /* adopt: only a VM without a project; its own project again is a no-op */
    assert_int_equal(store_vm_set_project(s, "p", "/b/VMFile.kdl", &err), -EEXIST);
    assert_code(err, "vm_manager::vm::already_exists");
    assert_string_equal(vmctl_error_find_detail(err, "project"), "/a/VMFile.kdl");
    vmctl_error_free(TAKE_PTR(err));
    assert_int_equal(store_vm_set_project(s, "p", "/a/VMFile.kdl", &err), 0);
    assert_int_equal(store_vm_set_project(s, "hand", "/b/VMFile.kdl", &err), 0);
    store_vm_free(TAKE_PTR(v));
    assert_int_equal(store_vm_get(s, "hand", &v, &err), 0);
    assert_string_equal(v->project, "/b/VMFile.kdl");
    assert_int_equal(store_vm_set_project(s, "ghost", "/b/VMFile.kdl", &err), -ENOENT);
}

/* Cleaning up after a killed create: exactly one process takes the leftover row over. */
static void test_claim(void **state)
{
    const char *home = *state;
    cleanup_error vmctl_error *err = NULL;
    {
        cleanup_store store *s = NULL;
        assert_int_equal(store_open(home, &s, &err), 0);
        cleanup_free char *config = spec_json("left");
        store_vm v = {.name = "left",
                      .config = config,
                      .dir = "/d",
                      .owner_pid = DEAD_PID,
                      .owner_start = DEAD_START};
        assert_int_equal(store_vm_insert(s, &v, &err), 0);
        v.name = "done";
        assert_int_equal(store_vm_insert(s, &v, &err), 0);
        assert_int_equal(store_vm_set_complete(s, "done", &err), 0);

        /* Wrong owner, a complete row, a missing row: nothing to take over. */
        assert_int_equal(store_vm_claim(s, "left", DEAD_PID, DEAD_START + 1, 1, 1, &err), 0);
        assert_int_equal(store_vm_claim(s, "left", DEAD_PID + 1, DEAD_START, 1, 1, &err), 0);
        assert_int_equal(store_vm_claim(s, "done", DEAD_PID, DEAD_START, 1, 1, &err), 0);
        assert_int_equal(store_vm_claim(s, "ghost", DEAD_PID, DEAD_START, 1, 1, &err), 0);
        assert_null(err);
        cleanup_store_vm store_vm *got = NULL;
        assert_int_equal(store_vm_get(s, "left", &got, &err), 0);
        assert_int_equal(got->owner_pid, DEAD_PID);
    }

    /* Eight cleaners at once. */
    const char *const names[8] = {"left", "left", "left", "left", "left", "left", "left", "left"};
    int codes[8], won = 0, lost = 0;
    race(home, names, 8, codes, RACE_CLAIM);
    for (int i = 0; i < 8; i++) {
        if (codes[i] == RACE_OK)
            won++;
        else if (codes[i] == RACE_EXISTS)
            lost++;
        else
            fail_msg("process %d exited %d", i, codes[i]);
    }
    assert_int_equal(won, 1);
    assert_int_equal(lost, 7);

    cleanup_store store *s = NULL;
    assert_int_equal(store_open(home, &s, &err), 0);
    cleanup_store_vm store_vm *got = NULL;
    assert_int_equal(store_vm_get(s, "left", &got, &err), 0);
    assert_int_not_equal(got->owner_pid, DEAD_PID);
    assert_int_equal(got->owner_start, 1);
    assert_false(got->complete);
    /* The winner's claim is final: the dead owner's identity no longer matches. */
    assert_int_equal(store_vm_claim(s, "left", DEAD_PID, DEAD_START, 1, 1, &err), 0);
}

/* Another process holds the write lock past the busy timeout: store::locked, not a hang. */
static void test_locked(void **state)
{
    const char *home = *state;
    cleanup_error vmctl_error *err = NULL;
    cleanup_store store *s = NULL;
    /* Create the store, then close it: SQLite connections must not cross a fork. */
    assert_int_equal(store_open(home, &s, &err), 0);
    store_close(TAKE_PTR(s));

    int ready[2], release[2];
    assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
    assert_int_equal(pipe2(release, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        close(release[1]);
        cleanup_free char *path = db_path(home);
        sqlite3 *db = NULL;
        if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
            sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
            _exit(1);
        (void)!write(ready[1], "x", 1);
        char c;
        (void)!read(release[0], &c, 1); /* until the parent closes it (or dies) */
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close(db);
        _exit(0);
    }
    close(ready[1]);
    close(release[0]);
    char c;
    assert_int_equal(read(ready[0], &c, 1), 1);
    close(ready[0]);

    /* Opening only reads: it works while another process holds the write lock. */
    assert_int_equal(store_open(home, &s, &err), 0);

    uint64_t t0 = now_usec();
    insert_vm(s, "blocked", VMCTL_VM_CREATED, &err, -EBUSY);
    uint64_t waited = now_usec() - t0;
    close(release[1]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    assert_code(err, "vm_manager::store::locked");
    cleanup_free char *path = db_path(home);
    assert_string_equal(vmctl_error_find_detail(err, "path"), path);
    /* It did wait for the lock (the bound is ~10 s), and gave up. */
    assert_true(waited >= 5 * 1000000ULL);
    print_message("waited %.1f s for the lock\n", (double)waited / 1e6);

    /* The lock is gone: the same insert works now. */
    insert_vm(s, "blocked", VMCTL_VM_CREATED, &err, 0);
}

/* --- damaged or foreign databases --- */

static void test_garbage_db(void **state)
{
    const char *home = *state;
    assert_int_equal(mkdir_p(home, 0700), 0);
    cleanup_free char *path = db_path(home);
    char junk[4096];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (char)("this is not a sqlite database\n"[i % 30]);
    assert_int_equal(write_file_atomic(path, junk, sizeof(junk), 0600), 0);

    cleanup_error vmctl_error *err = NULL;
    store *s = NULL;
    assert_true(store_open(home, &s, &err) < 0);
    assert_null(s);
    assert_code(err, "vm_manager::store::corrupt");
    assert_string_equal(vmctl_error_find_detail(err, "path"), path);
    assert_non_null(strstr(vmctl_error_get_help(err), path));

    /* Left as it was: the user decides what to do with it. */
    cleanup_free char *after = NULL;
    size_t len = 0;
    assert_int_equal(read_file(path, &after, &len), 0);
    assert_int_equal(len, sizeof(junk));
    assert_memory_equal(after, junk, sizeof(junk));
}

static void test_unknown_schema(void **state)
{
    static const struct {
        const char *sql;
        const char *detail_version;
    } cases[] = {
        {"CREATE TABLE vms (name TEXT PRIMARY KEY); PRAGMA user_version = 10;", "10"},
        {"CREATE TABLE photos (id INTEGER PRIMARY KEY, data BLOB);", "0"},
        /* Claims our version but has other columns. */
        {"CREATE TABLE vms (name TEXT PRIMARY KEY, colour TEXT); PRAGMA user_version = 1;", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cleanup_free char *home = str_printf("%s/schema%zu", (const char *)*state, i);
        assert_int_equal(mkdir_p(home, 0700), 0);
        cleanup_free char *path = db_path(home);
        make_sqlite(path, cases[i].sql);

        cleanup_error vmctl_error *err = NULL;
        store *s = NULL;
        assert_true(store_open(home, &s, &err) < 0);
        assert_null(s);
        assert_code(err, "vm_manager::store::corrupt");
        assert_string_equal(vmctl_error_find_detail(err, "path"), path);
        assert_non_null(strstr(vmctl_error_get_help(err), path));
        if (cases[i].detail_version)
            assert_string_equal(vmctl_error_find_detail(err, "schema_version"),
                                cases[i].detail_version);
    }
}

/* A row whose state column holds something we never write. */
static void test_bad_state_row(void **state)
{
    const char *home = *state;
    cleanup_error vmctl_error *err = NULL;
    cleanup_store store *s = NULL;
    assert_int_equal(store_open(home, &s, &err), 0);
    insert_vm(s, "odd", VMCTL_VM_CREATED, &err, 0);
    cleanup_free char *path = db_path(home);
    make_sqlite(path, "UPDATE vms SET state = 'levitating' WHERE name = 'odd'");

    store_vm *v = NULL;
    assert_true(store_vm_get(s, "odd", &v, &err) < 0);
    assert_code(err, "vm_manager::store::corrupt");
    assert_string_equal(vmctl_error_find_detail(err, "vm"), "odd");
    assert_string_equal(vmctl_error_find_detail(err, "field"), "state");
    store_vm **list = NULL;
    size_t n = 0;
    assert_true(store_vm_list(s, &list, &n, &err) < 0);
    assert_code(err, "vm_manager::store::corrupt");
}

/* --- size --- */

static void test_list_1000(void **state)
{
    cleanup_error vmctl_error *err = NULL;
    cleanup_store store *s = NULL;
    assert_int_equal(store_open(*state, &s, &err), 0);

    /* Insert in a scrambled order; list must come back sorted by name. */
    for (int i = 0; i < 1000; i++) {
        char name[32];
        snprintf(name, sizeof(name), "vm-%04d", (i * 7919) % 1000);
        insert_vm(s, name, VMCTL_VM_STOPPED, &err, 0);
    }
    uint64_t best = UINT64_MAX;
    for (int round = 0; round < 5; round++) {
        store_vm **list = NULL;
        size_t n = 0;
        uint64_t t0 = now_usec();
        assert_int_equal(store_vm_list(s, &list, &n, &err), 0);
        uint64_t t = now_usec() - t0;
        best = t < best ? t : best;
        assert_int_equal(n, 1000);
        for (size_t i = 0; i < n; i++) {
            char name[32];
            snprintf(name, sizeof(name), "vm-%04zu", i);
            assert_string_equal(list[i]->name, name);
            assert_int_equal(list[i]->state, VMCTL_VM_STOPPED);
        }
        store_vm_list_free(list, n);
    }
    print_message("store_vm_list of 1000 rows: best of 5 = %.2f ms\n", (double)best / 1000.0);
}

/* --- descriptors --- */

/* Every descriptor on the store's files (db, -wal, -shm) is close-on-exec. */
static void test_cloexec(void **state)
{
    const char *home = *state;
    cleanup_error vmctl_error *err = NULL;
    cleanup_store store *s = NULL;
    assert_int_equal(store_open(home, &s, &err), 0);
    insert_vm(s, "x", VMCTL_VM_CREATED, &err, 0); /* WAL and shm files exist now */

    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int found = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char link[512], target[4096];
        snprintf(link, sizeof(link), "/proc/self/fd/%s", de->d_name);
        ssize_t len = readlink(link, target, sizeof(target) - 1);
        if (len < 0)
            continue;
        target[len] = 0;
        if (!str_startswith(target, home))
            continue;
        int fl = fcntl(atoi(de->d_name), F_GETFD);
        if (fl < 0)
            continue;
        if (!(fl & FD_CLOEXEC))
            fail_msg("fd %s on '%s' lacks FD_CLOEXEC", de->d_name, target);
        found++;
    }
    closedir(d);
    print_message("%d store descriptors, all close-on-exec\n", found);
    assert_true(found >= 3); /* vmctl.db, vmctl.db-wal, vmctl.db-shm */
}

/* --- vm_spec JSON --- */

static void test_spec_round_trip(void **state)
{
    (void)state;
    cleanup_free char *json = spec_json("round");
    cleanup_error vmctl_error *err = NULL;
    cleanup_vm_spec vm_spec *s = NULL;
    assert_int_equal(vm_spec_from_json(json, &s, &err), 0);
    assert_string_equal(s->name, "round");
    assert_string_equal(s->backend, "qemu");
    assert_string_equal(s->machine, "microvm");
    assert_string_equal(s->accel, "tcg");
    assert_int_equal(s->vcpus, 2);
    assert_int_equal(s->memory_mib, 256);
    assert_int_equal(s->disk_gib, 0);
    assert_string_equal(s->image, "default");
    assert_string_equal(s->kernel, "/k/vmlinux");
    assert_null(s->initrd);
    assert_null(s->cmdline);
    assert_null(s->disk);
    assert_string_equal(s->net, "none");
    assert_int_equal(s->n_ports, 2);
    assert_int_equal(s->ports[0].host_port, 2222);
    assert_int_equal(s->ports[0].guest_port, 22);
    assert_false(s->ports[0].udp);
    assert_int_equal(s->ports[1].host_port, 0);
    assert_int_equal(s->ports[1].guest_port, 53);
    assert_true(s->ports[1].udp);
    assert_int_equal(strv_length(s->env), 2);
    assert_string_equal(s->env[0], "A=1");
    assert_string_equal(s->env[1], "B=two words");
    assert_true(s->agent);

    /* And back: the same text. */
    cleanup_free char *again = NULL;
    assert_int_equal(vm_spec_to_json(s, &again), 0);
    assert_string_equal(again, json);
    /* the jail's fields: absent means jailed, no quota; written only when not the default */
    assert_false(s->no_jail);
    assert_true(s->cpu_quota == 0);
    assert_null(strstr(again, "jail"));
    s->no_jail = true;
    s->cpu_quota = 0.5;
    {
        cleanup_free char *j2 = NULL;
        cleanup_vm_spec vm_spec *s2 = NULL;
        assert_int_equal(vm_spec_to_json(s, &j2), 0);
        assert_int_equal(vm_spec_from_json(j2, &s2, &err), 0);
        assert_true(s2->no_jail);
        assert_true(s2->cpu_quota == 0.5);
    }
    s->no_jail = false;
    s->cpu_quota = 0;

    /* Mounts and the owner round-trip. */
    {
        vm_spec_mount mounts[] = {{"/h/a", "/mnt/a", false}, {"/h/b", "/mnt/b", true}};
        vm_spec m = {.name = "m",
                     .backend = "qemu",
                     .machine = "microvm",
                     .accel = "tcg",
                     .vcpus = 1,
                     .memory_mib = 64,
                     .net = "none",
                     .mounts = mounts,
                     .n_mounts = 2,
                     .mount_type = "virtiofs",
                     .owner_pid = 42,
                     .owner_start = 1234};
        cleanup_free char *mj = NULL;
        assert_int_equal(vm_spec_to_json(&m, &mj), 0);
        cleanup_vm_spec vm_spec *back = NULL;
        assert_int_equal(vm_spec_from_json(mj, &back, &err), 0);
        assert_int_equal(back->n_mounts, 2);
        assert_string_equal(back->mounts[1].source, "/h/b");
        assert_string_equal(back->mounts[1].target, "/mnt/b");
        assert_true(back->mounts[1].read_only);
        assert_false(back->mounts[0].read_only);
        assert_string_equal(back->mount_type, "virtiofs");
        assert_int_equal(back->owner_pid, 42);
        assert_int_equal(back->owner_start, 1234);
    }

    /* A spec without optional parts. */
    vm_spec bare = {.name = "bare",
                    .backend = "qemu",
                    .machine = "q35",
                    .accel = "kvm",
                    .vcpus = 1,
                    .memory_mib = 32,
                    .disk_gib = 10,
                    .net = "user"};
    cleanup_free char *bj = NULL;
    assert_int_equal(vm_spec_to_json(&bare, &bj), 0);
    cleanup_vm_spec vm_spec *b = NULL;
    assert_int_equal(vm_spec_from_json(bj, &b, &err), 0);
    assert_null(b->image);
    assert_null(b->kernel);
    assert_int_equal(b->n_ports, 0);
    assert_null(b->ports);
    assert_null(b->env);
    assert_false(b->agent);
    assert_int_equal(b->disk_gib, 10);

    /* Required strings cannot be NULL on the way out either. */
    bare.net = NULL;
    char *none = NULL;
    assert_int_equal(vm_spec_to_json(&bare, &none), -EINVAL);
    assert_null(none);
}

static void test_spec_corrupt(void **state)
{
    (void)state;
#define BASE                                                                                       \
    "\"name\":\"a\",\"backend\":\"qemu\",\"machine\":\"microvm\",\"accel\":\"tcg\","               \
    "\"memory_mib\":256,\"disk_gib\":0,\"net\":\"none\""
    static const struct {
        const char *json, *field;
    } cases[] = {
        {"{not json", "config"},
        {"[1,2]", "config"},
        {"{" BASE ",\"agent\":true}", "vcpus"},
        {"{" BASE ",\"vcpus\":\"two\",\"agent\":true}", "vcpus"},
        {"{" BASE ",\"vcpus\":0,\"agent\":true}", "vcpus"},
        {"{" BASE ",\"vcpus\":-3,\"agent\":true}", "vcpus"},
        {"{" BASE ",\"vcpus\":1}", "agent"},
        {"{" BASE ",\"vcpus\":1,\"agent\":1}", "agent"},
        {"{" BASE ",\"vcpus\":1,\"agent\":true,\"kernel\":5}", "kernel"},
        {"{" BASE ",\"vcpus\":1,\"agent\":true,\"ports\":{}}", "ports"},
        {"{" BASE ",\"vcpus\":1,\"agent\":true,\"ports\":[{\"host\":1,\"guest\":0}]}", "ports"},
        {"{" BASE ",\"vcpus\":1,\"agent\":true,\"ports\":[{\"host\":1,\"guest\":70000}]}", "ports"},
        {"{" BASE ",\"vcpus\":1,\"agent\":true,\"ports\":[{\"host\":1,\"guest\":2,"
         "\"proto\":\"sctp\"}]}",
         "ports"},
        {"{" BASE ",\"vcpus\":1,\"agent\":true,\"env\":[\"NOEQUALS\"]}", "env"},
        {"{" BASE ",\"vcpus\":1,\"agent\":true,\"env\":[\"1BAD=x\"]}", "env"},
        {"{" BASE ",\"vcpus\":1,\"agent\":true,\"env\":[3]}", "env"},
        {"{\"name\":\"../etc\",\"backend\":\"qemu\"}", "name"},
        {"{\"backend\":\"qemu\"}", "name"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cleanup_error vmctl_error *err = NULL;
        vm_spec *s = NULL;
        int r = vm_spec_from_json(cases[i].json, &s, &err);
        if (r >= 0)
            fail_msg("case %zu accepted: %s", i, cases[i].json);
        assert_null(s);
        assert_code(err, "vm_manager::store::corrupt");
        const char *f = vmctl_error_find_detail(err, "field");
        if (!f || strcmp(f, cases[i].field) != 0)
            fail_msg("case %zu: field %s, expected %s (%s)", i, f ? f : "(none)", cases[i].field,
                     vmctl_error_get_message(err));
        assert_non_null(strstr(vmctl_error_get_message(err), cases[i].field));
    }
    /* The minimal valid document, to show the cases above fail for the reason given. */
    cleanup_error vmctl_error *err = NULL;
    cleanup_vm_spec vm_spec *ok = NULL;
    assert_int_equal(vm_spec_from_json("{" BASE ",\"vcpus\":1,\"agent\":true}", &ok, &err), 0);
#undef BASE
}

/* --- port forwards --- */

static void test_port_forward(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int host, guest;
        bool udp;
    } good[] = {
        {"8080:80", 8080, 80, false}, {"0:22", 0, 22, false},
        {"53:53/udp", 53, 53, true},  {"65535:65535/tcp", 65535, 65535, false},
        {"1:1", 1, 1, false},         {"00080:0080", 80, 80, false},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        vmctl_port_forward pf = {0};
        cleanup_error vmctl_error *err = NULL;
        if (vmctl_port_forward_parse(good[i].s, &pf, &err) != 0)
            fail_msg("'%s' refused: %s", good[i].s, vmctl_error_get_message(err));
        assert_int_equal(pf.host_port, good[i].host);
        assert_int_equal(pf.guest_port, good[i].guest);
        assert_int_equal(pf.udp, good[i].udp);
    }

    static const char *const bad[] = {
        "",          "80",    ":80",       "80:",           "80:0",    "65536:80", "80:65536",
        "a:b",       "-1:80", "+80:80",    " 80:80",        "80:80 ",  "80:80/",   "80:80/sctp",
        "80:80/UDP", "1:2:3", "123456:80", "80:80/udp/tcp", "0x50:80",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        vmctl_port_forward pf = {7, 7, true};
        cleanup_error vmctl_error *err = NULL;
        int r = vmctl_port_forward_parse(bad[i], &pf, &err);
        if (r != -EINVAL)
            fail_msg("'%s' gave %d, expected -EINVAL", bad[i], r);
        assert_code(err, "vm_manager::config::invalid");
        assert_string_equal(vmctl_error_find_detail(err, "field"), "port");
        assert_string_equal(vmctl_error_find_detail(err, "value"), bad[i]);
        assert_non_null(strstr(vmctl_error_find_detail(err, "allowed"), "1-65535"));
        assert_non_null(strstr(vmctl_error_get_message(err), bad[i]));
        /* Untouched on failure. */
        assert_int_equal(pf.host_port, 7);
        assert_int_equal(pf.guest_port, 7);
    }
    cleanup_error vmctl_error *err = NULL;
    assert_int_equal(vmctl_port_forward_parse(NULL, NULL, &err), -EINVAL);
    assert_code(err, "vm_manager::invalid_argument"); /* a NULL string is the caller's bug */
    /* Without an error object: the return value alone. */
    assert_int_equal(vmctl_port_forward_parse("x", NULL, NULL), -EINVAL);
}

/* Snapshot rows (schema 6): unique per VM and name; a referenced one cannot be deleted; a VM's
 * references go with its row. */
static void test_snapshots(void **state)
{
    cleanup_error vmctl_error *err = NULL;
    cleanup_store store *s = NULL;
    assert_int_equal(store_open(*state, &s, &err), 0);
    insert_vm(s, "src", VMCTL_VM_CREATED, &err, 0);
    insert_vm(s, "clone", VMCTL_VM_CREATED, &err, 0);
    store_snapshot row = {.vm = "src",
                          .name = "base",
                          .kind = "template",
                          .dir = "/x/base",
                          .ram = "/dev/shm/x.ram",
                          .config = "{}",
                          .qemu_version = "7.2.22",
                          .machine = "microvm",
                          .memory_mib = 256,
                          .created_at = 1};
    assert_int_equal(store_snapshot_insert(s, &row, &err), 0);
    assert_int_equal(store_snapshot_insert(s, &row, &err), -EEXIST);
    row.name = "other";
    row.ram = NULL;
    assert_int_equal(store_snapshot_insert(s, &row, &err), 0);
    assert_int_equal(store_snapshot_set_complete(s, "src", "base", &err), 0);
    store_snapshot *g = NULL;
    assert_int_equal(store_snapshot_get(s, "src", "base", &g, &err), 0);
    assert_true(g->complete);
    assert_string_equal(g->ram, "/dev/shm/x.ram");
    assert_int_equal(g->memory_mib, 256);
    store_snapshot_free(g);
    assert_int_equal(store_snapshot_get(s, "src", "nope", &g, &err), -ENOENT);
    store_snapshot **list = NULL;
    size_t n = 0;
    assert_int_equal(store_snapshot_list(s, "src", &list, &n, &err), 0);
    assert_int_equal(n, 2);
    store_snapshot_list_free(list, n);

    assert_int_equal(store_snapshot_ref_add(s, "clone", "src", "base", &err), 0);
    assert_int_equal(store_snapshot_ref_add(s, "clone", "src", "base", &err), 0); /* idempotent */
    char *user = NULL;
    size_t users = 0;
    assert_int_equal(store_snapshot_delete(s, "src", "base", false, &user, &users, &err), -EBUSY);
    assert_string_equal(user, "clone");
    assert_int_equal(users, 1);
    free(user);
    /* the clone's row goes: its reference with it */
    assert_int_equal(store_vm_delete(s, "clone", &err), 0);
    assert_int_equal(store_snapshot_delete(s, "src", "base", false, NULL, NULL, &err), 0);
    assert_int_equal(store_snapshot_delete(s, "src", "base", false, NULL, NULL, &err), -ENOENT);
}

/* Warm pools (schema 8): sizes, members, and the take (a member's row renamed with its ports and
 * references in one transaction; a member gone or a name taken change nothing). */
static void test_pools(void **state)
{
    cleanup_error vmctl_error *err = NULL;
    cleanup_store store *s = NULL;
    assert_int_equal(store_open(*state, &s, &err), 0);
    unsigned size = 9;
    assert_int_equal(store_pool_size(s, "src", "base", &size, &err), 0);
    assert_int_equal(size, 0);
    assert_int_equal(store_pool_set(s, "src", "base", 2, NULL, &err), 0);
    assert_int_equal(store_pool_set(s, "src", "base", 3, "/p/VMFile.kdl", &err), 0); /* an update */
    assert_int_equal(store_pool_size(s, "src", "base", &size, &err), 0);
    assert_int_equal(size, 3);
    store_pool *pools = NULL;
    size_t np = 0;
    assert_int_equal(store_pool_list(s, &pools, &np, &err), 0);
    assert_int_equal(np, 1);
    assert_string_equal(pools[0].snap, "base");
    assert_string_equal(pools[0].project, "/p/VMFile.kdl"); /* who set it (schema 9) */
    store_pool_list_free(pools, np);
    assert_int_equal(store_pool_set(s, "src", "base", 3, NULL, &err), 0); /* by hand: the user's */
    assert_int_equal(store_pool_list(s, &pools, &np, &err), 0);
    assert_int_equal(np, 1);
    assert_null(pools[0].project);
    store_pool_list_free(pools, np);

    cleanup_free char *config = spec_json("pool-a");
    store_vm v = {.name = "pool-a",
                  .state = VMCTL_VM_RUNNING,
                  .config = config,
                  .dir = "/x/vms/pool-a",
                  .complete = true};
    vmctl_port_forward fwd = {.host_port = 40022, .guest_port = 22};
    assert_int_equal(store_vm_insert_ports(s, &v, &fwd, 1, &err), 0);
    assert_int_equal(store_snapshot_ref_add(s, "pool-a", "src", "base", &err), 0);
    assert_int_equal(store_pool_member_add(s, "pool-a", "src", "base", &err), 0);
    insert_vm(s, "taken", VMCTL_VM_CREATED, &err, 0);
    char **members = NULL;
    assert_int_equal(store_pool_members(s, "src", "base", &members, &err), 0);
    assert_int_equal(strv_length(members), 1);
    assert_string_equal(members[0], "pool-a");
    strv_free(members);

    /* a name that is there: nothing changes */
    assert_int_equal(store_pool_take(s, "pool-a", "taken", "{}", "/x/vms/taken", NULL, 1, 2, &err),
                     -EEXIST);
    assert_int_equal(store_pool_members(s, NULL, NULL, &members, &err), 0);
    assert_int_equal(strv_length(members), 1);
    strv_free(members);
    /* the take */
    assert_int_equal(
        store_pool_take(s, "pool-a", "c1", config, "/x/vms/c1", "/p/VMFile.kdl", 7, 8, &err), 0);
    cleanup_store_vm store_vm *g = NULL;
    assert_int_equal(store_vm_get(s, "c1", &g, &err), 0);
    assert_false(g->complete);
    assert_int_equal(g->owner_pid, 7);
    assert_int_equal(g->state, VMCTL_VM_RUNNING);
    assert_string_equal(g->dir, "/x/vms/c1");
    assert_string_equal(g->project, "/p/VMFile.kdl");
    store_vm *gone = NULL;
    assert_int_equal(store_vm_get(s, "pool-a", &gone, &err), -ENOENT);
    char *owner = NULL;
    assert_int_equal(store_port_owner(s, 40022, false, &owner, &err), 1);
    assert_string_equal(owner, "c1");
    free(owner);
    size_t refs = 0;
    assert_int_equal(store_snapshot_ref_count(s, "src", "base", &refs, &err), 0);
    assert_int_equal(refs, 1);
    assert_int_equal(store_pool_members(s, NULL, NULL, &members, &err), 0);
    assert_int_equal(strv_length(members), 0);
    strv_free(members);
    /* taken already */
    assert_int_equal(store_pool_take(s, "pool-a", "c2", "{}", "/x/vms/c2", NULL, 1, 2, &err),
                     -ENOENT);
    /* a member goes with its row; size 0 removes the pool */
    insert_vm(s, "pool-b", VMCTL_VM_RUNNING, &err, 0);
    assert_int_equal(store_pool_member_add(s, "pool-b", "src", "base", &err), 0);
    assert_int_equal(store_vm_delete(s, "pool-b", &err), 0);
    assert_int_equal(store_pool_members(s, NULL, NULL, &members, &err), 0);
    assert_int_equal(strv_length(members), 0);
    strv_free(members);
    assert_int_equal(store_pool_set(s, "src", "base", 0, NULL, &err), 0);
    assert_int_equal(store_pool_size(s, "src", "base", &size, &err), 0);
    assert_int_equal(size, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_insert_get_list_delete, setup_home, teardown_home),
        cmocka_unit_test_setup_teardown(test_duplicate, setup_home, teardown_home),
        cmocka_unit_test_setup_teardown(test_file_modes, setup_home, teardown_home),
        cmocka_unit_test_setup_teardown(test_not_found, setup_home, teardown_home),
        cmocka_unit_test_setup_teardown(test_cas, setup_home, teardown_home),
        cmocka_unit_test_setup_teardown(test_concurrent_distinct, setup_home, teardown_home),
        cmocka_unit_test_setup_teardown(test_concurrent_same, setup_home, teardown_home),
        cmocka_unit_test_setup_teardown(test_claim, setup_home, teardown_home),
        cmocka_unit_test_setup_teardown(test_cid, setup_home, teardown_home),
        cmocka_unit_test_setup_teardown(test_jail_uid, setup_home, teardown_home),
        cmocka_unit_test_setup_teardown(test_leases, setup_home, teardown_home),
        cmocka_unit_test_setup_teardown(test_snapshots, setup_home, teardown_home),
        cmocka_unit_test_setup_teardown(test_pools, setup_home, teardown_home),
        cmocka_unit_test_setup_teardown(test_concurrent_cid, setup_home, teardown_home),
        cmocka_unit_test_setup_teardown(test_migrate, setup_home, teardown_home),
        cmocka_unit_test_setup_teardown(test_project_provision, setup_home, teardown_home),
        cmocka_unit_test_setup_teardown(test_locked, setup_home, teardown_home),
        cmocka_unit_test_setup_teardown(test_garbage_db, setup_home, teardown_home),
        cmocka_unit_test_setup_teardown(test_unknown_schema, setup_home, teardown_home),
        cmocka_unit_test_setup_teardown(test_bad_state_row, setup_home, teardown_home),
        cmocka_unit_test_setup_teardown(test_list_1000, setup_home, teardown_home),
        cmocka_unit_test_setup_teardown(test_cloexec, setup_home, teardown_home),
        cmocka_unit_test(test_spec_round_trip),
        cmocka_unit_test(test_spec_corrupt),
        cmocka_unit_test(test_port_forward),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
