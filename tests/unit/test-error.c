/* SPDX-License-Identifier: MIT */
/* The error catalogue against docs/errors.md and the seed's codes, and the error object API. */
#include <errno.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "error.h"
#include "util/util.h"

#ifndef SOURCE_ROOT
#error "SOURCE_ROOT must be defined by the build"
#endif

/* The seed table (shared/seeds/vm-manager-error-handling.md), verbatim: code and trigger, and the
 * help where the seed gives one (NULL where it says "(varies)", "(custom hint per error)" or
 * "(transparent)": ours then writes its own). NULL too where the seed's help names what this
 * project does not have (a cargo feature, SSH for provisioners that run over the agent, a work
 * directory, DHCP for a VM that has no network, an unactionable restatement): ours says what to
 * do here instead (docs/errors.md lists the seed's text). */
static const struct {
    const char *code, *trigger, *help;
} seed[] = {
    {"vm_manager::qemu::spawn_failed", "QEMU process failed to start",
     "Ensure `qemu-system-x86_64` is installed, in PATH, and KVM is available (`/dev/kvm`)"},
    {"vm_manager::qemu::qmp_connect_failed", "Can't connect to QMP socket", NULL},
    {"vm_manager::qemu::qmp_command_failed", "QMP command returned an error", NULL},
    {"vm_manager::image::overlay_creation_failed", "QCOW2 overlay creation failed",
     "Ensure `qemu-img` is installed and base image exists and is readable"},
    {"vm_manager::network::ip_discovery_timeout", "Guest IP not found", NULL},
    {"vm_manager::propolis::unreachable", "Can't reach propolis-server",
     "Ensure propolis-server is running and listening on expected address"},
    {"vm_manager::cloudinit::iso_failed", "Seed ISO generation failed", NULL},
    {"vm_manager::ssh::failed", "SSH connection or command failed",
     "Check SSH key, guest reachability, and sshd running"},
    {"vm_manager::ssh::keygen_failed", "Ed25519 key generation failed",
     "Internal error; please report it"},
    {"vm_manager::image::download_failed", "Image download failed",
     "Check network connectivity and URL correctness"},
    {"vm_manager::image::format_detection_failed", "Can't detect image format",
     "Ensure `qemu-img` installed and file is valid disk image"},
    {"vm_manager::image::conversion_failed", "Image format conversion failed",
     "Ensure `qemu-img` installed and sufficient disk space"},
    {"vm_manager::vm::not_found", "VM not in store", "Run `vmctl list` to see available VMs"},
    {"vm_manager::vm::invalid_state", "Operation invalid for current state", NULL},
    {"vm_manager::backend::not_available", "Backend not supported on platform", NULL},
    {"vm_manager::vmfile::not_found", "VMFile.kdl not found",
     "Create VMFile.kdl in current directory or specify path with `--file`"},
    {"vm_manager::vmfile::parse_failed", "KDL syntax error",
     "Check VMFile.kdl syntax; see https://kdl.dev"},
    {"vm_manager::vmfile::validation", "VMFile validation error", NULL},
    {"vm_manager::provision::failed", "Provisioner step failed", NULL},
    {"vm_manager::io", "General I/O error", NULL},
};

/* The codes SPEC.md gives the other two seeds' failure classes. */
static const char *const spec_codes[] = {
    "vm_manager::vm::already_exists",
    "vm_manager::snapshot::already_exists",
    "vm_manager::snapshot::not_found",
    "vm_manager::store::locked",
    "vm_manager::store::corrupt",
    "vm_manager::metrics::failed",
    "vm_manager::vm::shutdown_failed",
    "vm_manager::network::firewall_failed",
    "vm_manager::network::config_invalid",
    "vm_manager::network::setup_failed",
    "vm_manager::jailer::failed",
    "vm_manager::image::rootfs_failed",
    "vm_manager::image::checksum_mismatch",
    "vm_manager::snapshot::uffd_failed",
    "vm_manager::agent::failed",
    "vm_manager::config::invalid",
    "vm_manager::host::kvm_unavailable",
    "vm_manager::host::missing_dependency",
    "vm_manager::timeout",
    "vm_manager::exec::unavailable",
};

/* --- the catalogue itself --- */

static void test_catalogue_shape(void **state)
{
    (void)state;
    regex_t re;
    assert_int_equal(regcomp(&re, "^vm_manager::[a-z_]+(::[a-z_]+)*$", REG_EXTENDED | REG_NOSUB),
                     0);
    for (size_t i = 0; i < _VMCTL_E_MAX; i++) {
        const vmctl_error_info *e = vmctl_error_catalogue(i);
        assert_non_null(e);
        assert_int_equal(e->kind, (int)i); /* indexed by kind: no gap, no misplaced row */
        assert_non_null(e->code);
        if (regexec(&re, e->code, 0, NULL, 0) != 0)
            fail_msg("code '%s' does not match vm_manager::[a-z_]+(::[a-z_]+)*", e->code);
        assert_non_null(e->trigger);
        assert_non_null(e->help);
        if (!*e->trigger || !*e->help)
            fail_msg("%s: empty trigger or help", e->code);
        if (strchr(e->trigger, '|') || strchr(e->help, '|') || strchr(e->trigger, '\n') ||
            strchr(e->help, '\n'))
            fail_msg("%s: '|' or newline would break the docs table", e->code);
        for (size_t j = 0; j < i; j++)
            if (streq(vmctl_error_catalogue(j)->code, e->code))
                fail_msg("code '%s' appears twice", e->code);
        assert_ptr_equal(vmctl_error_lookup(e->code), e);
    }
    regfree(&re);
    assert_null(vmctl_error_catalogue(_VMCTL_E_MAX));
    assert_null(vmctl_error_lookup("vm_manager::nope"));
    assert_null(vmctl_error_lookup(NULL));
}

static void test_seed_codes(void **state)
{
    (void)state;
    assert_int_equal(sizeof(seed) / sizeof(seed[0]), 20);
    for (size_t i = 0; i < sizeof(seed) / sizeof(seed[0]); i++) {
        const vmctl_error_info *e = vmctl_error_lookup(seed[i].code);
        if (!e)
            fail_msg("seed code '%s' missing from the catalogue", seed[i].code);
        assert_string_equal(e->trigger, seed[i].trigger);
        if (seed[i].help)
            assert_string_equal(e->help, seed[i].help);
    }
    assert_int_equal(sizeof(spec_codes) / sizeof(spec_codes[0]), 20);
    for (size_t i = 0; i < sizeof(spec_codes) / sizeof(spec_codes[0]); i++)
        if (!vmctl_error_lookup(spec_codes[i]))
            fail_msg("code '%s' (SPEC.md) missing from the catalogue", spec_codes[i]);
}

/* --- docs/errors.md --- */

struct doc_row {
    char *code, *trigger, *help;
    int line;
};

static char *dup_trimmed(const char *s, size_t len)
{
    while (len && (*s == ' ' || *s == '\t'))
        s++, len--;
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    return strndup(s, len);
}

/* Rows of the form "| `code` | trigger | help |" in the "## Catalogue" section (up to the next
 * "## " heading; its "### " subsections are part of it). Returns the number of rows. */
static size_t parse_doc(const char *text, struct doc_row *rows, size_t max)
{
    size_t n = 0;
    int lineno = 0;
    bool in_catalogue = false, seen_catalogue = false;
    for (const char *line = text; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        lineno++;
        if (str_startswith(line, "## ")) {
            in_catalogue = len == strlen("## Catalogue") && str_startswith(line, "## Catalogue");
            seen_catalogue |= in_catalogue;
        }
        if (in_catalogue && str_startswith(line, "| `")) {
            /* Split on '|' (none of our texts contains one: test_catalogue_shape checks). */
            const char *cells[4];
            size_t cell_len[4], nc = 0;
            const char *p = line + 1, *stop = line + len;
            while (p < stop && nc < 4) {
                const char *bar = memchr(p, '|', (size_t)(stop - p));
                if (!bar)
                    break;
                cells[nc] = p;
                cell_len[nc] = (size_t)(bar - p);
                nc++;
                p = bar + 1;
            }
            bool trailing = false;
            for (const char *q = p; q < stop; q++)
                trailing |= *q != ' ' && *q != '\t' && *q != '\r';
            if (nc != 3 || trailing)
                fail_msg("docs/errors.md:%d: expected | `code` | trigger | help |", lineno);
            assert_true(n < max);
            char *code = dup_trimmed(cells[0], cell_len[0]);
            size_t cl = strlen(code);
            if (cl < 3 || code[0] != '`' || code[cl - 1] != '`')
                fail_msg("docs/errors.md:%d: code not in backquotes", lineno);
            rows[n].code = strndup(code + 1, cl - 2);
            free(code);
            rows[n].trigger = dup_trimmed(cells[1], cell_len[1]);
            rows[n].help = dup_trimmed(cells[2], cell_len[2]);
            rows[n].line = lineno;
            n++;
        }
        line = end ? end + 1 : NULL;
    }
    if (!seen_catalogue)
        fail_msg("docs/errors.md has no '## Catalogue' section");
    return n;
}

static void test_docs_match_catalogue(void **state)
{
    (void)state;
    cleanup_free char *text = NULL;
    const char *path = SOURCE_ROOT "/docs/errors.md";
    if (read_file(path, &text, NULL) < 0)
        fail_msg("cannot read %s", path);

    struct doc_row rows[256] = {{0}};
    size_t n = parse_doc(text, rows, 256);
    assert_true(n > 0);

    /* Every doc row is a catalogue code with the same trigger and help, once. */
    for (size_t i = 0; i < n; i++) {
        const vmctl_error_info *e = vmctl_error_lookup(rows[i].code);
        if (!e)
            fail_msg("docs/errors.md:%d: '%s' is not in the catalogue", rows[i].line, rows[i].code);
        if (!streq(e->trigger, rows[i].trigger))
            fail_msg("docs/errors.md:%d: %s trigger differs:\n  doc:   %s\n  table: %s",
                     rows[i].line, e->code, rows[i].trigger, e->trigger);
        if (!streq(e->help, rows[i].help))
            fail_msg("docs/errors.md:%d: %s help differs:\n  doc:   %s\n  table: %s", rows[i].line,
                     e->code, rows[i].help, e->help);
        for (size_t j = 0; j < i; j++)
            if (streq(rows[j].code, rows[i].code))
                fail_msg("docs/errors.md:%d: '%s' listed twice", rows[i].line, rows[i].code);
    }
    /* Every catalogue code has a doc row. */
    for (size_t k = 0; k < _VMCTL_E_MAX; k++) {
        const char *code = vmctl_error_catalogue(k)->code;
        bool found = false;
        for (size_t i = 0; i < n && !found; i++)
            found = streq(rows[i].code, code);
        if (!found)
            fail_msg("'%s' has no row in docs/errors.md", code);
    }
    assert_int_equal(n, _VMCTL_E_MAX);
    for (size_t i = 0; i < n; i++) {
        free(rows[i].code);
        free(rows[i].trigger);
        free(rows[i].help);
    }
}

/* --- the error object --- */

static void test_make(void **state)
{
    (void)state;
    cleanup_error vmctl_error *e = NULL;
    assert_int_equal(err_make(&e, VMCTL_E_IO, ENOENT, "cannot open '%s'", "/x"), -ENOENT);
    assert_int_equal(vmctl_error_get_kind(e), VMCTL_E_IO);
    assert_string_equal(vmctl_error_get_code(e), "vm_manager::io");
    assert_string_equal(vmctl_error_get_message(e), "cannot open '/x'");
    assert_string_equal(vmctl_error_get_help(e), vmctl_error_catalogue(VMCTL_E_IO)->help);
    assert_int_equal(vmctl_error_get_errno(e), ENOENT);
    assert_int_equal(vmctl_error_get_n_details(e), 0);
    assert_int_equal(vmctl_error_get_n_context(e), 0);
    assert_int_equal(vmctl_error_get_n_notes(e), 0);

    /* errnum 0 still fails; a negative errnum is taken as its absolute value. */
    assert_int_equal(err_make(&e, VMCTL_E_SSH_FAILED, 0, "x"), -EIO);
    assert_string_equal(vmctl_error_get_code(e), "vm_manager::ssh::failed");
    assert_int_equal(err_make(&e, VMCTL_E_SSH_FAILED, -EPERM, "x"), -EPERM);
    assert_int_equal(vmctl_error_get_errno(e), EPERM);

    /* A second err_make replaces the first error (ASan checks the old one is freed). */
    assert_int_equal(err_make(&e, VMCTL_E_TIMEOUT, ETIMEDOUT, "late"), -ETIMEDOUT);
    assert_string_equal(vmctl_error_get_message(e), "late");

    /* Out-of-range kinds become internal. */
    assert_int_equal(err_make(&e, _VMCTL_E_MAX, EINVAL, "bad"), -EINVAL);
    assert_string_equal(vmctl_error_get_code(e), "vm_manager::internal");

    /* reterr may be NULL: only the return value. */
    assert_int_equal(err_make(NULL, VMCTL_E_IO, EACCES, "nothing"), -EACCES);
    err_detail(NULL, "k", "v");
    err_detail_num(NULL, "k", 1);
    err_note(NULL, "n");
    err_help(NULL, "h");
    assert_int_equal(err_prefix(NULL, -7, "ctx"), -7);

    /* The public constructor behaves the same. */
    cleanup_error vmctl_error *p = NULL;
    assert_int_equal(vmctl_error_new(&p, VMCTL_E_CLI_USAGE, EINVAL, "unknown option '%s'", "-q"),
                     -EINVAL);
    assert_string_equal(vmctl_error_get_code(p), "vm_manager::cli::usage");
    assert_string_equal(vmctl_error_get_message(p), "unknown option '-q'");
}

static void test_details_notes_help(void **state)
{
    (void)state;
    cleanup_error vmctl_error *e = NULL;
    err_make(&e, VMCTL_E_QEMU_SPAWN_FAILED, EIO, "qemu exited with status %d", 1);
    err_detail(&e, "vm", "%s", "alpha");
    err_detail_num(&e, "status_code", 1);
    err_detail_num(&e, "timeout_seconds", 2.5);
    err_detail(&e, "path", "/p/%d", 7);
    assert_int_equal(vmctl_error_get_n_details(e), 4);

    static const struct {
        const char *key, *value;
        int is_number;
    } want[] = {{"vm", "alpha", 0},
                {"status_code", "1", 1},
                {"timeout_seconds", "2.5", 1},
                {"path", "/p/7", 0}};
    for (size_t i = 0; i < 4; i++) {
        const char *k, *v;
        int num = -1;
        assert_int_equal(vmctl_error_get_detail(e, i, &k, &v, &num), 0);
        assert_string_equal(k, want[i].key);
        assert_string_equal(v, want[i].value);
        assert_int_equal(num, want[i].is_number);
    }
    assert_int_equal(vmctl_error_get_detail(e, 4, NULL, NULL, NULL), -ERANGE);
    assert_string_equal(vmctl_error_find_detail(e, "path"), "/p/7");
    assert_null(vmctl_error_find_detail(e, "nope"));

    /* Setting a key again replaces it in place. */
    err_detail(&e, "vm", "beta");
    vmctl_error_add_detail(e, "extra", "1");
    assert_int_equal(vmctl_error_get_n_details(e), 5);
    const char *k, *v;
    int num;
    assert_int_equal(vmctl_error_get_detail(e, 0, &k, &v, &num), 0);
    assert_string_equal(k, "vm");
    assert_string_equal(v, "beta");
    assert_int_equal(vmctl_error_get_detail(e, 4, &k, &v, &num), 0);
    assert_string_equal(k, "extra");
    assert_int_equal(num, 0);

    /* Notes keep their order. */
    err_note(&e, "qemu: %s", "could not open disk");
    vmctl_error_add_note(e, "second");
    assert_int_equal(vmctl_error_get_n_notes(e), 2);
    assert_string_equal(vmctl_error_get_note(e, 0), "qemu: could not open disk");
    assert_string_equal(vmctl_error_get_note(e, 1), "second");
    assert_null(vmctl_error_get_note(e, 2));

    /* Help: the catalogue's until overridden. */
    assert_string_equal(vmctl_error_get_help(e),
                        vmctl_error_catalogue(VMCTL_E_QEMU_SPAWN_FAILED)->help);
    err_help(&e, "Install %s", "qemu-system-x86");
    assert_string_equal(vmctl_error_get_help(e), "Install qemu-system-x86");
    vmctl_error_set_help(e, "Other help");
    assert_string_equal(vmctl_error_get_help(e), "Other help");
}

static void test_context_order(void **state)
{
    (void)state;
    cleanup_error vmctl_error *e = NULL;
    int r = err_make(&e, VMCTL_E_QEMU_QMP_CONNECT_FAILED, ECONNREFUSED, "connect failed");
    /* Context is added on the way up: innermost first, so the last added is the outermost. */
    assert_int_equal(err_prefix(&e, r, "while waiting for QMP of '%s'", "a"), -ECONNREFUSED);
    assert_int_equal(err_prefix(&e, r, "while starting VM '%s'", "a"), -ECONNREFUSED);
    assert_int_equal(err_prefix(&e, -1, "outermost"), -1);
    assert_int_equal(vmctl_error_get_n_context(e), 3);
    assert_string_equal(vmctl_error_get_context(e, 0), "outermost");
    assert_string_equal(vmctl_error_get_context(e, 1), "while starting VM 'a'");
    assert_string_equal(vmctl_error_get_context(e, 2), "while waiting for QMP of 'a'");
    assert_null(vmctl_error_get_context(e, 3));
    /* The message itself is not touched by context. */
    assert_string_equal(vmctl_error_get_message(e), "connect failed");

    /* Prefixing nothing keeps nothing. */
    vmctl_error *none = NULL;
    assert_int_equal(err_prefix(&none, -5, "ctx"), -5);
    assert_null(none);
}

static void test_timeout_and_invalid_state(void **state)
{
    (void)state;
    cleanup_error vmctl_error *e = NULL;
    assert_int_equal(err_timeout(&e, "wait_ready", 30, "VM '%s' not ready after %d s", "a", 30),
                     -ETIMEDOUT);
    assert_string_equal(vmctl_error_get_code(e), "vm_manager::timeout");
    assert_string_equal(vmctl_error_get_message(e), "VM 'a' not ready after 30 s");
    assert_int_equal(vmctl_error_get_errno(e), ETIMEDOUT);
    assert_int_equal(vmctl_error_get_n_details(e), 2);
    const char *k, *v;
    int num;
    assert_int_equal(vmctl_error_get_detail(e, 0, &k, &v, &num), 0);
    assert_string_equal(k, "operation");
    assert_string_equal(v, "wait_ready");
    assert_int_equal(num, 0);
    assert_int_equal(vmctl_error_get_detail(e, 1, &k, &v, &num), 0);
    assert_string_equal(k, "timeout_seconds");
    assert_string_equal(v, "30");
    assert_int_equal(num, 1);
    assert_int_equal(err_timeout(NULL, "x", 1, "y"), -ETIMEDOUT);

    assert_int_equal(err_invalid_state(&e, "web", "stopped", "paused"), -EBUSY);
    assert_string_equal(vmctl_error_get_code(e), "vm_manager::vm::invalid_state");
    assert_int_equal(vmctl_error_get_n_details(e), 3);
    static const char *const keys[] = {"vm", "from", "to"};
    static const char *const vals[] = {"web", "stopped", "paused"};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(vmctl_error_get_detail(e, i, &k, &v, &num), 0);
        assert_string_equal(k, keys[i]);
        assert_string_equal(v, vals[i]);
        assert_int_equal(num, 0);
    }
    const char *msg = vmctl_error_get_message(e);
    assert_non_null(strstr(msg, "web"));
    assert_non_null(strstr(msg, "stopped"));
    assert_non_null(strstr(msg, "paused"));
}

static void test_invalid_field(void **state)
{
    (void)state;
    cleanup_error vmctl_error *e = NULL;
    assert_int_equal(
        err_invalid_field(&e, "machine", "pc", "microvm or q35", "invalid machine '%s'", "pc"),
        -EINVAL);
    assert_string_equal(vmctl_error_get_code(e), "vm_manager::config::invalid");
    assert_string_equal(vmctl_error_get_message(e), "invalid machine 'pc'");
    assert_string_equal(vmctl_error_find_detail(e, "field"), "machine");
    assert_string_equal(vmctl_error_find_detail(e, "value"), "pc");
    assert_string_equal(vmctl_error_find_detail(e, "allowed"), "microvm or q35");
    assert_string_equal(vmctl_error_get_help(e), "Set machine to microvm or q35.");

    /* no value, no allowed: only the field, and the catalogue's help */
    assert_int_equal(err_invalid_field(&e, "image", NULL, NULL, "nothing to boot"), -EINVAL);
    assert_int_equal(vmctl_error_get_n_details(e), 1);
    assert_string_equal(vmctl_error_get_help(e),
                        vmctl_error_catalogue(VMCTL_E_CONFIG_INVALID)->help);
    assert_int_equal(err_invalid_field(NULL, "x", "y", "z", "w"), -EINVAL);
}

/* The cause is told once: only a real errno, not a placeholder, not when the message says it. */
static void test_cause(void **state)
{
    (void)state;
    cleanup_error vmctl_error *e = NULL;
    err_make(&e, VMCTL_E_IO, -EACCES, "cannot create '%s'", "/x");
    assert_int_equal(vmctl_error_get_cause_errno(e), EACCES);
    cleanup_free char *d = err_describe(e);
    assert_string_equal(d, "cannot create '/x': Permission denied");

    err_make(&e, VMCTL_E_IO, EACCES, "cannot create '/x': permission denied");
    assert_int_equal(vmctl_error_get_cause_errno(e), 0);
    assert_int_equal(vmctl_error_get_errno(e), EACCES);
    free(d);
    d = err_describe(e);
    assert_string_equal(d, "cannot create '/x': permission denied");

    err_make(&e, VMCTL_E_CONFIG_INVALID, EINVAL, "invalid name");
    assert_int_equal(vmctl_error_get_cause_errno(e), 0);
    err_make(&e, VMCTL_E_VM_NOT_FOUND, ENOENT, "no VM 'a'");
    assert_int_equal(vmctl_error_get_cause_errno(e), 0);
    err_make(&e, VMCTL_E_SSH_FAILED, EIO, "ssh failed");
    assert_int_equal(vmctl_error_get_cause_errno(e), 0);
    err_make(&e, VMCTL_E_IO, EIO, "cannot write");
    assert_int_equal(vmctl_error_get_cause_errno(e), EIO);
    err_make(&e, VMCTL_E_IMAGE_FORMAT_DETECTION_FAILED, EINVAL, "not a regular file");
    assert_int_equal(vmctl_error_get_cause_errno(e), 0);
    err_make(&e, VMCTL_E_STORE_CORRUPT, EBADMSG, "bad row");
    assert_int_equal(vmctl_error_get_cause_errno(e), 0);
    err_make(&e, VMCTL_E_IO, 0, "no errno");
    assert_int_equal(vmctl_error_get_cause_errno(e), 0);
    assert_int_equal(vmctl_error_get_cause_errno(NULL), 0);

    /* an input error with a system error behind it: err_cause makes it shown */
    err_invalid_field(&e, "path", "/tmp", NULL, "image file '/tmp' is not readable");
    assert_int_equal(vmctl_error_get_cause_errno(e), 0);
    assert_int_equal(err_cause(&e, -EISDIR), -EISDIR);
    assert_int_equal(vmctl_error_get_errno(e), EISDIR);
    assert_int_equal(vmctl_error_get_cause_errno(e), EISDIR);
    assert_string_equal(vmctl_error_get_code(e), "vm_manager::config::invalid");
    assert_int_equal(err_cause(NULL, ENOENT), -ENOENT);
}

static void test_null_object(void **state)
{
    (void)state;
    vmctl_error_free(NULL);
    assert_int_equal(vmctl_error_get_kind(NULL), VMCTL_E_INTERNAL);
    assert_string_equal(vmctl_error_get_code(NULL), "vm_manager::internal");
    assert_non_null(vmctl_error_get_message(NULL));
    assert_non_null(vmctl_error_get_help(NULL));
    assert_int_equal(vmctl_error_get_n_details(NULL), 0);
    assert_int_equal(vmctl_error_get_detail(NULL, 0, NULL, NULL, NULL), -ERANGE);
    assert_null(vmctl_error_find_detail(NULL, "vm"));
    assert_int_equal(vmctl_error_get_n_context(NULL), 0);
    assert_null(vmctl_error_get_context(NULL, 0));
    assert_int_equal(vmctl_error_get_n_notes(NULL), 0);
    assert_null(vmctl_error_get_note(NULL, 0));
    vmctl_error_add_detail(NULL, "k", "v");
    vmctl_error_add_note(NULL, "n");
    vmctl_error_set_help(NULL, "h");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_catalogue_shape),
        cmocka_unit_test(test_seed_codes),
        cmocka_unit_test(test_docs_match_catalogue),
        cmocka_unit_test(test_make),
        cmocka_unit_test(test_details_notes_help),
        cmocka_unit_test(test_context_order),
        cmocka_unit_test(test_timeout_and_invalid_state),
        cmocka_unit_test(test_null_object),
        cmocka_unit_test(test_invalid_field),
        cmocka_unit_test(test_cause),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
