/* SPDX-License-Identifier: MIT */
/* VMFile.kdl schema mapping and validation, without VMs: every field onto vmctl_vm_config, path
 * resolution (relative to the file, ~), provisioner steps in order, v1 documents, positioned
 * validation errors naming node and field, parse_failed, not_found, the public handle. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <vmctl/vmfile.h>

#include "error.h"
#include "util/util.h"
#include "vmfile.h"

static char tmpdir[] = "/tmp/test-vmfile.XXXXXX";

static void put(const char *rel, const char *content)
{
    cleanup_free char *p = str_printf("%s/%s", tmpdir, rel);
    cleanup_free char *d = strdup(p);
    *strrchr(d, '/') = '\0';
    assert_int_equal(mkdir_p(d, 0755), 0);
    assert_int_equal(write_file_atomic(p, content, strlen(content), 0644), 0);
}

static int setup(void **state)
{
    (void)state;
    assert_non_null(mkdtemp(tmpdir));
    put("scripts/setup.sh", "echo hi\n");
    put("files/app.conf", "x=1\n");
    put("boot/vmlinux", "kernel");
    put("boot/initrd.img", "initrd");
    put("home/.ssh/id.pub", "ssh-ed25519 AAAA test\n");
    put("ci/user-data.yaml", "#cloud-config\n");
    cleanup_free char *home = str_printf("%s/home", tmpdir);
    setenv("HOME", home, 1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    rm_rf(tmpdir);
    return 0;
}

static vmfile *parse_ok(const char *doc)
{
    vmfile *f = NULL;
    vmctl_error *e = NULL;
    int r = vmfile_parse("VMFile.kdl", tmpdir, doc, strlen(doc), &f, &e);
    if (r < 0)
        fail_msg("unexpected error: %s", e ? vmctl_error_get_message(e) : "?");
    assert_null(e);
    return f;
}

/* Parse doc expecting kind at line:column, with field (NULL: none) and a message part. */
static void parse_bad(const char *doc, vmctl_error_kind kind, const char *line, const char *col,
                      const char *field, const char *part)
{
    vmfile *f = NULL;
    vmctl_error *e = NULL;
    int r = vmfile_parse("VMFile.kdl", tmpdir, doc, strlen(doc), &f, &e);
    assert_true(r < 0);
    assert_null(f);
    assert_non_null(e);
    if (vmctl_error_get_kind(e) != kind)
        fail_msg("%s: got %s: %s", doc, vmctl_error_get_code(e), vmctl_error_get_message(e));
    assert_string_equal(vmctl_error_find_detail(e, "line"), line);
    assert_string_equal(vmctl_error_find_detail(e, "column"), col);
    if (field)
        assert_string_equal(vmctl_error_find_detail(e, "field"), field);
    cleanup_free char *prefix = str_printf("VMFile.kdl:%s:%s: ", line, col);
    assert_true(str_startswith(vmctl_error_get_message(e), prefix));
    if (part && !strstr(vmctl_error_get_message(e), part))
        fail_msg("message '%s' lacks '%s'", vmctl_error_get_message(e), part);
    assert_true(vmctl_error_get_n_notes(e) >= 1);
    assert_non_null(strchr(vmctl_error_get_note(e, 0), '^'));
    vmctl_error_free(e);
}

/* jail #false is --no-jail; cpu-quota takes a fraction (docs/isolation.md) */
static void test_jail_fields(void **state)
{
    (void)state;
    vmfile *f = parse_ok("vm \"a\" {\n    jail #false\n    cpu-quota 0.5\n}\nvm \"b\" {\n}\n");
    assert_true(f->machines[0].config.no_jail);
    assert_true(f->machines[0].config.cpu_quota == 0.5);
    assert_false(f->machines[1].config.no_jail);
    assert_true(f->machines[1].config.cpu_quota == 0);
    vmfile_free(f);
    const vmctl_error_kind V = VMCTL_E_VMFILE_VALIDATION;
    parse_bad("vm \"a\" {\n    jail \"no\"\n}\n", V, "2", "10", "jail", "#true or #false");
    parse_bad("vm \"a\" {\n    cpu-quota 0\n}\n", V, "2", "15", "cpu-quota", "0.01 to 255");
}

/* from "VM/SNAP" pool=N (docs/vmfile.md "A warm pool"): one size per snapshot */
static void test_from_pool(void **state)
{
    (void)state;
    vmfile *f = parse_ok("vm \"a\" {\n    from \"s/b\" pool=4\n}\nvm \"b\" {\n    from \"s/b\" "
                         "pool=4\n}\nvm \"c\" {\n    from \"s/c\"\n}\nvm \"d\" {\n    from "
                         "\"s/d\" pool=0\n}\n");
    assert_true(f->machines[0].has_pool && f->machines[0].pool == 4);
    assert_string_equal(f->machines[1].from_snap, "b");
    assert_true(f->machines[1].has_pool && f->machines[1].pool == 4);
    assert_false(f->machines[2].has_pool);
    assert_true(f->machines[3].has_pool && f->machines[3].pool == 0);
    vmfile_free(f);
    const vmctl_error_kind V = VMCTL_E_VMFILE_VALIDATION;
    parse_bad("vm \"a\" {\n    from \"s/b\" pool=65\n}\n", V, "2", "21", "pool", "0 to 64");
    parse_bad("vm \"a\" {\n    from \"s/b\" pool=-1\n}\n", V, "2", "21", "pool", "0 to 64");
    parse_bad("vm \"a\" {\n    from \"s/b\" pool=1.5\n}\n", V, "2", "21", "pool", "0 to 64");
    parse_bad("vm \"a\" {\n    from \"s/b\" pool=\"2\"\n}\n", V, "2", "21", "pool", "0 to 64");
    parse_bad("vm \"a\" {\n    from \"s/b\" warm=2\n}\n", V, "2", "16", "warm", "no property");
    parse_bad("vm \"a\" {\n    from \"s/b\" pool=1\n}\nvm \"b\" {\n    from \"s/b\" pool=2\n}\n", V,
              "5", "21", "pool", "'pool' of 's/b' is 1 in vm \"a\"");
}

static void test_full_mapping(void **state)
{
    (void)state;
    vmfile *f =
        parse_ok("vm \"web\" {\n"
                 "    vcpus 2\n"
                 "    memory \"2G\"\n"
                 "    disk 10\n"
                 "    machine \"q35\"\n"
                 "    accel \"tcg\"\n"
                 "    network \"user\"\n"
                 "    image \"debian-12\"\n"
                 "    port \"8080:80\"\n"
                 "    port host=5353 guest=53 udp=#true\n"
                 "    env \"A=1\" B=\"two\" C=3\n"
                 "    cloud-init { user-data \"ci/user-data.yaml\"; }\n"
                 "    ssh { key \"~/.ssh/id.pub\"; user \"debian\"; }\n"
                 "    provision \"shell\" { inline \"echo hi\"; timeout 30; }\n"
                 "    provision \"file\" { source \"./files/app.conf\"; destination "
                 "\"/etc/app.conf\"; }\n"
                 "    provision \"shell\" { script \"scripts/setup.sh\"; user \"1000:1000\"; }\n"
                 "}\n"
                 "vm \"db\" {\n"
                 "    kernel \"boot/vmlinux\"\n"
                 "    initrd \"boot/initrd.img\"\n"
                 "    cmdline \"quiet\"\n"
                 "    memory 512\n"
                 "}\n"
                 "vm \"plain\"\n");
    assert_int_equal(f->n_machines, 3);
    const vmctl_vm_config *c = &f->machines[0].config;
    assert_string_equal(c->name, "web");
    assert_int_equal(c->vcpus, 2);
    assert_int_equal(c->memory_mib, 2048);
    assert_int_equal(c->disk_gib, 10);
    assert_string_equal(c->machine, "q35");
    assert_string_equal(c->accel, "tcg");
    assert_string_equal(c->net, "user");
    assert_string_equal(c->image, "debian-12"); /* a cache name stays a name */
    assert_null(c->kernel);
    assert_int_equal(c->n_ports, 2);
    assert_int_equal(c->ports[0].host_port, 8080);
    assert_int_equal(c->ports[0].guest_port, 80);
    assert_false(c->ports[0].udp);
    assert_int_equal(c->ports[1].host_port, 5353);
    assert_int_equal(c->ports[1].guest_port, 53);
    assert_true(c->ports[1].udp);
    assert_non_null(c->env);
    assert_string_equal(c->env[0], "A=1");
    assert_string_equal(c->env[1], "B=two");
    assert_string_equal(c->env[2], "C=3");
    assert_null(c->env[3]);
    cleanup_free char *ud = str_printf("%s/ci/user-data.yaml", tmpdir);
    assert_string_equal(c->cloud_init, ud);
    cleanup_free char *key = str_printf("%s/home/.ssh/id.pub", tmpdir);
    assert_string_equal(c->ssh_key, key);
    assert_string_equal(f->machines[0].ssh_user, "debian");

    const vmfile_machine *m = &f->machines[0];
    assert_int_equal(m->n_steps, 3);
    assert_int_equal(m->steps[0].kind, VMFILE_STEP_SHELL);
    assert_string_equal(m->steps[0].inline_cmd, "echo hi");
    assert_null(m->steps[0].script);
    assert_true(m->steps[0].timeout_sec == 30);
    assert_int_equal(m->steps[0].line, 14);
    assert_int_equal(m->steps[1].kind, VMFILE_STEP_FILE);
    cleanup_free char *src = str_printf("%s/files/app.conf", tmpdir);
    assert_string_equal(m->steps[1].source, src);
    assert_string_equal(m->steps[1].destination, "/etc/app.conf");
    cleanup_free char *script = str_printf("%s/scripts/setup.sh", tmpdir);
    assert_string_equal(m->steps[2].script, script);
    assert_null(m->steps[2].inline_cmd);
    assert_string_equal(m->steps[2].user, "1000:1000");
    assert_null(m->steps[0].user);

    c = &f->machines[1].config;
    assert_string_equal(c->name, "db");
    cleanup_free char *k = str_printf("%s/boot/vmlinux", tmpdir);
    assert_string_equal(c->kernel, k);
    assert_non_null(strstr(c->initrd, "/boot/initrd.img"));
    assert_string_equal(c->cmdline, "quiet");
    assert_int_equal(c->memory_mib, 512);
    assert_null(c->image);
    assert_int_equal(f->machines[1].n_steps, 0);

    /* No fields: the default guest with every default. */
    c = &f->machines[2].config;
    assert_string_equal(c->name, "plain");
    assert_null(c->image);
    assert_null(c->kernel);
    assert_int_equal(c->vcpus, 0);
    assert_int_equal(c->memory_mib, 0);
    assert_null(c->env);
    assert_null(c->net);
    assert_ptr_equal(vmfile_find(f, "db"), &f->machines[1]);
    assert_null(vmfile_find(f, "nope"));
    vmfile_free(f);
}

/* network "tap" { ... }: the allow-list, the flags, the limits and forwards inside it. */
static void test_network_tap(void **state)
{
    (void)state;
    vmfile *f = parse_ok("vm \"box\" {\n"
                         "    image \"debian-12\"\n"
                         "    disk-iops 200\n"
                         "    network \"tap\" {\n"
                         "        allow \"10.0.0.0/8:443/tcp\"\n"
                         "        allow \"192.168.1.1\"\n"
                         "        allow-dns\n"
                         "        allow-all #false\n"
                         "        rate-limit-mbps 50\n"
                         "        port \"8080:80\"\n"
                         "    }\n"
                         "    port \"2222:22\"\n"
                         "}\n");
    const vmctl_vm_config *c = &f->machines[0].config;
    assert_string_equal(c->net, "tap");
    assert_int_equal(c->n_allow, 2);
    assert_string_equal(c->allow[0], "10.0.0.0/8:443/tcp");
    assert_string_equal(c->allow[1], "192.168.1.1");
    assert_true(c->allow_dns);
    assert_false(c->allow_all);
    assert_int_equal(c->rate_limit_mbps, 50);
    assert_int_equal(c->disk_iops, 200);
    assert_int_equal(c->n_ports, 2);
    assert_int_equal(c->ports[0].host_port, 8080);
    assert_int_equal(c->ports[1].guest_port, 22);
    vmfile_free(f);
}

static void test_image_forms(void **state)
{
    (void)state;
    vmfile *f = parse_ok("vm \"a\" { image \"./boot/vmlinux\"; }\n"
                         "vm \"b\" { image-url \"http://x/y.qcow2\" sha256=\"ab\" name=\"y\"; "
                         "memory \"300M\"; }\n");
    cleanup_free char *p = str_printf("%s/boot/vmlinux", tmpdir);
    assert_string_equal(f->machines[0].config.image, p); /* a path resolves */
    assert_string_equal(f->machines[1].image_url, "http://x/y.qcow2");
    assert_string_equal(f->machines[1].image_sha256, "ab");
    assert_string_equal(f->machines[1].image_name, "y");
    assert_null(f->machines[1].config.image);
    assert_int_equal(f->machines[1].config.memory_mib, 300);
    vmfile_free(f);
}

static void test_v1_document(void **state)
{
    (void)state;
    /* KDL v1 only: bare true, r"raw" strings. */
    vmfile *f = parse_ok("vm \"old\" {\n"
                         "    port host=80 guest=80 udp=true\n"
                         "    provision \"shell\" { inline r\"echo \\n\"; }\n"
                         "}\n");
    assert_true(f->machines[0].config.ports[0].udp);
    assert_string_equal(f->machines[0].steps[0].inline_cmd, "echo \\n");
    vmfile_free(f);
}

static void test_validation(void **state)
{
    (void)state;
    const vmctl_error_kind V = VMCTL_E_VMFILE_VALIDATION;
    parse_bad("vm \"x\" {\n    memory 16\n}", V, "2", "12", "memory", "at least 32 MiB");
    parse_bad("vm \"x\" {\n    memory \"lots\"\n}", V, "2", "12", "memory", "\"512M\"");
    parse_bad("vm \"x\" {\n    vcpus 0\n}", V, "2", "11", "vcpus", "1 to 255");
    parse_bad("vm \"x\" {\n    vcpus 1.5\n}", V, "2", "11", "vcpus", NULL);
    parse_bad("vm \"x\" {\n    disk #true\n}", V, "2", "10", "disk", NULL);
    parse_bad("vm \"x\" {\n    mem 16\n}", V, "2", "5", "mem", "allowed are image");
    parse_bad("vm \"x\" {\n    machine \"pc\"\n}", V, "2", "13", "machine", "\"microvm\", \"q35\"");
    parse_bad("vm \"x\" {\n    accel \"hvf\"\n}", V, "2", "11", "accel", NULL);
    parse_bad("vm \"x\" {\n    network \"bridge\" \"x\"\n}", V, "2", "22", "network",
              "exactly one value");
    parse_bad("vm \"x\" {\n    port \"80\"\n}", V, "2", "10", "port", "HOST:GUEST");
    parse_bad("vm \"x\" {\n    port host=80\n}", V, "2", "5", "guest", "both host= and guest=");
    parse_bad("vm \"x\" {\n    port host=80 guest=0\n}", V, "2", "24", "guest", NULL);
    parse_bad("vm \"x\" {\n    env \"NOEQUALS\"\n}", V, "2", "9", "env", "\"K=V\"");
    parse_bad("vm \"x\" {\n    env A-B=\"1\"\n}", V, "2", "9", "env", "A-Za-z_");
    parse_bad("vm \"x\" {\n    image \"a\"\n    image-url \"http://b\"\n}", V, "3", "5",
              "image-url", "at most one image source");
    parse_bad("vm \"x\" {\n    cmdline \"quiet\"\n}", V, "2", "5", "cmdline", "needs 'kernel'");
    parse_bad("vm \"x\" {\n    kernel \"boot/nope\"\n}", V, "2", "12", "kernel", "does not exist");
    parse_bad("vm \"x\" {\n    image \"./nope.qcow2\"\n}", V, "2", "11", "image", "does not exist");
    parse_bad("vm \"x\" {\n    cloud-init { vendor-data \"x\"; }\n}", V, "2", "18", "vendor-data",
              "allowed is user-data");
    parse_bad("vm \"x\" {\n    cloud-init\n}", V, "2", "5", "user-data", "needs user-data");
    parse_bad("vm \"x\" {\n    ssh { port 22; }\n}", V, "2", "11", "port", "key, user");
    parse_bad("vm \"x\" {\n    vcpus 1\n    vcpus 2\n}", V, "3", "5", "vcpus", "only once");
    parse_bad("vm \"x\" {\n    provision \"puppet\"\n}", V, "2", "15", "provision",
              "\"shell\" or \"file\"");
    parse_bad("vm \"x\" {\n    provision \"shell\" { inline \"a\"; inline \"b\"; }\n}", V, "2",
              "37", "inline", "only once");
    parse_bad("vm \"x\" {\n    provision \"shell\" { source \"a\"; }\n}", V, "2", "25", "source",
              "inline, script, user, timeout");
    parse_bad("vm \"x\" {\n    provision \"shell\" { inline \"a\"; user 1000; }\n}", V, "2", "42",
              "user", "guest user");
    parse_bad("vm \"x\" {\n    provision \"shell\" { inline \"a\"; timeout -1; }\n}", V, "2", "45",
              "timeout", "positive");
    parse_bad("vm \"x\" {\n    provision \"file\" { source \"files/app.conf\"; destination "
              "\"etc/x\"; }\n}",
              V, "2", "5", "destination", "absolute");
    parse_bad("vm \"x\" {\n    provision \"file\" { destination \"/x\"; }\n}", V, "2", "5",
              "source", "needs both");
    parse_bad("vm \"x\" {\n    provision \"shell\" { script \"nope.sh\"; }\n}", V, "2", "32",
              "script", "does not exist");
    parse_bad("vm \"x\" cpus=2", V, "1", "8", "cpus", "no properties");
    parse_bad("vm", V, "1", "1", "name", "machine's name");
    parse_bad("vm 1", V, "1", "4", "name", "machine's name");
    parse_bad("vm \"a/b\"", V, "1", "4", "name", "invalid");
    parse_bad("vm \"a\"\nvm \"a\"", V, "2", "4", "name", "defined twice");
    parse_bad("network \"user\"", V, "1", "1", NULL, "only vm");
    parse_bad("", V, "1", "1", NULL, "describes no machine");
    /* The node and the vm are named in the details. */
    vmfile *f = NULL;
    vmctl_error *e = NULL;
    const char *d = "vm \"web\" {\n    provision \"shell\" { script \"nope.sh\"; }\n}";
    assert_true(vmfile_parse("VMFile.kdl", tmpdir, d, strlen(d), &f, &e) < 0);
    assert_string_equal(vmctl_error_find_detail(e, "vm"), "web");
    assert_string_equal(vmctl_error_find_detail(e, "node"), "script");
    assert_non_null(strstr(vmctl_error_get_message(e), "vm \"web\""));
    vmctl_error_free(e);
}

static void test_parse_failed(void **state)
{
    (void)state;
    parse_bad("vm \"x\" {\n    vcpus 1\n", VMCTL_E_VMFILE_PARSE_FAILED, "1", "8", NULL, NULL);
}

static void test_load(void **state)
{
    (void)state;
    cleanup_free char *cwd = getcwd(NULL, 0);
    cleanup_free char *empty = str_printf("%s/empty", tmpdir);
    assert_int_equal(mkdir_p(empty, 0755), 0);
    assert_int_equal(chdir(empty), 0);

    vmctl_vmfile *h = NULL;
    vmctl_error *e = NULL;
    assert_true(vmctl_vmfile_load(NULL, &h, &e) < 0);
    assert_int_equal(vmctl_error_get_kind(e), VMCTL_E_VMFILE_NOT_FOUND);
    vmctl_error_free(e);
    e = NULL;
    assert_true(vmctl_vmfile_load("missing.kdl", &h, &e) < 0);
    assert_int_equal(vmctl_error_get_kind(e), VMCTL_E_VMFILE_NOT_FOUND);
    vmctl_error_free(e);
    e = NULL;

    /* --file elsewhere: paths resolve against the file's directory, not the cwd. */
    put("env/VMFile.kdl", "vm \"one\" {\n    provision \"shell\" { script \"../scripts/setup.sh\"; "
                          "}\n}\nvm \"two\"\n");
    assert_int_equal(vmctl_vmfile_load("../env/VMFile.kdl", &h, &e), 0);
    assert_int_equal(vmctl_vmfile_n_machines(h), 2);
    assert_string_equal(vmctl_vmfile_machine_name(h, 1), "two");
    assert_null(vmctl_vmfile_machine_name(h, 2));
    assert_string_equal(vmctl_vmfile_machine_config(h, 0)->name, "one");
    assert_int_equal(vmctl_vmfile_machine_n_steps(h, 0), 1);
    cleanup_free char *script = str_printf("%s/scripts/setup.sh", tmpdir);
    assert_string_equal(h->f->machines[0].steps[0].script, script);
    vmctl_vmfile_free(h);

    /* VMFile.kdl in the current directory. */
    assert_int_equal(chdir(tmpdir), 0);
    put("VMFile.kdl", "vm \"here\" { memory 64; }\n");
    assert_int_equal(vmctl_vmfile_load(NULL, &h, &e), 0);
    assert_int_equal(vmctl_vmfile_machine_config(h, 0)->memory_mib, 64);
    vmctl_vmfile_free(h);
    /* Diagnostics name the file as given. */
    put("VMFile.kdl", "vm \"here\" { memory 1; }\n");
    assert_true(vmctl_vmfile_load(NULL, &h, &e) < 0);
    assert_true(str_startswith(vmctl_error_get_message(e), "VMFile.kdl:1:20: "));
    vmctl_error_free(e);
    assert_int_equal(chdir(cwd), 0);
}

/* --- limits and scaling (issue 16) --- */

static char *gen(size_t *len, const char *fmt_head, size_t n, const char *fmt_item,
                 const char *tail)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    assert_non_null(f);
    fputs(fmt_head, f);
    for (size_t i = 0; i < n; i++)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        fprintf(f, fmt_item, i, i); /* the tests' own literals, each with two %zu */
#pragma GCC diagnostic pop
    fputs(tail, f);
    fclose(f);
    return buf;
}

/* A cap: validation at line:1 of the first node over it, details limit and count. */
static void expect_cap(const char *doc, size_t len, vmctl_error_kind kind, const char *line,
                       const char *limit, const char *count, const char *part)
{
    vmfile *f = NULL;
    vmctl_error *e = NULL;
    assert_true(vmfile_parse("VMFile.kdl", tmpdir, doc, len, &f, &e) < 0);
    assert_null(f);
    if (vmctl_error_get_kind(e) != kind)
        fail_msg("got %s: %s", vmctl_error_get_code(e), vmctl_error_get_message(e));
    if (line) {
        assert_string_equal(vmctl_error_find_detail(e, "line"), line);
        cleanup_free char *prefix = str_printf("VMFile.kdl:%s:", line);
        assert_true(str_startswith(vmctl_error_get_message(e), prefix));
    }
    assert_string_equal(vmctl_error_find_detail(e, "limit"), limit);
    assert_string_equal(vmctl_error_find_detail(e, "count"), count);
    if (!strstr(vmctl_error_get_message(e), part))
        fail_msg("message '%s' lacks '%s'", vmctl_error_get_message(e), part);
    assert_non_null(strstr(vmctl_error_get_help(e), "Limits"));
    vmctl_error_free(e);
}

static void test_caps(void **state)
{
    (void)state;
    size_t len;
    /* 1025 machines: the 1025th vm node (line 1025) is over */
    cleanup_free char *m = gen(&len, "", 1025, "vm \"m%zu\" // %zu\n", "");
    expect_cap(m, len, VMCTL_E_VMFILE_VALIDATION, "1025", "1024", "1025",
               "too many vm nodes: 1025 (at most 1024 per VMFile)");
    /* 1024 are fine */
    cleanup_free char *m_ok = gen(&len, "", 1024, "vm \"m%zu\" // %zu\n", "");
    vmfile *f = parse_ok(m_ok);
    assert_int_equal(f->n_machines, 1024);
    vmfile_free(f);

    /* 4097 steps in one vm: the step at line 4098 is over; the count is all of them */
    cleanup_free char *st = gen(&len, "vm \"s\" {\n", 4100,
                                "    provision \"shell\" { inline \"echo %zu %zu\"; }\n", "}\n");
    expect_cap(st, len, VMCTL_E_VMFILE_VALIDATION, "4098", "4096", "4100",
               "too many provisioning steps: 4100 (at most 4096 per vm)");
    cleanup_free char *ports =
        gen(&len, "vm \"p\" {\n", 257, "    port host=%zu guest=%zu\n", "}\n");
    expect_cap(ports, len, VMCTL_E_VMFILE_VALIDATION, "258", "256", "257",
               "too many port forwards");
    cleanup_free char *env = gen(&len, "vm \"e\" {\n    env", 1025, " V%zu=%zu", "\n}\n");
    expect_cap(env, len, VMCTL_E_VMFILE_VALIDATION, "2", "1024", "1025", "too many env variables");

    /* more bytes than a VMFile may hold: refused before parsing */
    size_t big = VMFILE_MAX_BYTES + 1;
    char *huge = malloc(big);
    assert_non_null(huge);
    memset(huge, '\n', big);
    cleanup_free char *limit = str_printf("%u", VMFILE_MAX_BYTES);
    cleanup_free char *count = str_printf("%zu", big);
    expect_cap(huge, big, VMCTL_E_VMFILE_PARSE_FAILED, NULL, limit, count,
               "more than a VMFile may hold");
    free(huge);
    /* and by vmfile_load without reading it (a sparse file) */
    cleanup_free char *path = str_printf("%s/huge.kdl", tmpdir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)VMFILE_MAX_BYTES * 4), 0);
    close(fd);
    vmctl_error *e = NULL;
    f = NULL;
    assert_true(vmfile_load(path, &f, &e) < 0);
    assert_int_equal(vmctl_error_get_kind(e), VMCTL_E_VMFILE_PARSE_FAILED);
    assert_non_null(strstr(vmctl_error_get_message(e), "67108864 bytes"));
    vmctl_error_free(e);
    unlink(path);

    /* the duplicate check in a large file still names the second definition */
    cleanup_free char *dup = gen(&len, "", 1000, "vm \"d%zu\" // %zu\n", "vm \"d7\"\n");
    parse_bad(dup, VMCTL_E_VMFILE_VALIDATION, "1001", "4", "name", "defined twice");
}

/* CPU time of vmfile_parse on `steps` steps, 40 per machine (best of runs). */
static double cpu_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static double vmfile_time(size_t steps, int runs)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    assert_non_null(fp);
    for (size_t i = 0; i < steps; i++) {
        if (i % 40 == 0)
            fprintf(fp, "%svm \"m%zu\" {\n", i ? "}\n" : "", i / 40);
        fprintf(fp, "    provision \"shell\" { inline \"echo step %zu\"; }\n", i);
    }
    fputs("}\n", fp);
    fclose(fp);
    double best = 1e12;
    for (int r = 0; r < runs; r++) {
        vmfile *f = NULL;
        vmctl_error *e = NULL;
        double t0 = cpu_usec();
        if (vmfile_parse("VMFile.kdl", tmpdir, buf, len, &f, &e) < 0)
            fail_msg("%s", vmctl_error_get_message(e));
        double t = cpu_usec() - t0;
        assert_int_equal(f->n_machines, (steps + 39) / 40);
        /* line numbers from the one-pass cursor: machine k starts at line 1 + 42k */
        assert_int_equal(f->machines[f->n_machines - 1].steps[0].line, 2 + 42 * ((steps - 1) / 40));
        vmfile_free(f);
        if (t < best)
            best = t;
    }
    free(buf);
    return best;
}

/* Validation is linear: 10x the steps take less than 30x the CPU time (it was quadratic: every
 * step's line number was counted from the top of the file; 10x took 100x). */
static void test_scaling(void **state)
{
    (void)state;
    double ratio = 0;
    for (int attempt = 0; attempt < 3 && !(ratio > 0 && ratio < 30); attempt++) {
        double small = vmfile_time(3000, 3), large = vmfile_time(30000, 2);
        ratio = large / (small > 1 ? small : 1);
        print_message("vmfile_parse: 3000 steps %.0f us, 30000 steps %.0f us (x%.1f)\n", small,
                      large, ratio);
    }
    if (ratio >= 30)
        fail_msg("10x the steps took %.1fx the time", ratio);
}

static void test_actions(void **state)
{
    (void)state;
    assert_string_equal(vmctl_env_action_to_string(VMCTL_ENV_CREATED), "created");
    assert_string_equal(vmctl_env_action_to_string(VMCTL_ENV_UNCHANGED), "unchanged");
    assert_string_equal(vmctl_env_action_to_string(VMCTL_ENV_DESTROYED), "destroyed");
    assert_string_equal(vmctl_env_action_to_string((vmctl_env_action)99), "unknown");
}

static void test_mounts(void **state)
{
    (void)state;
    vmfile *f = parse_ok("vm \"dev\" {\n"
                         "    mount \"src\" \"/src\"\n"
                         "    mount \"/etc/ssl\" \"/ssl\" ro=#true\n"
                         "}\n");
    const vmctl_vm_config *c = &f->machines[0].config;
    assert_int_equal(c->n_mounts, 2);
    cleanup_free char *want = str_printf("%s/src", tmpdir);
    assert_string_equal(c->mounts[0].source, want);
    assert_string_equal(c->mounts[0].target, "/src");
    assert_false(c->mounts[0].read_only);
    assert_string_equal(c->mounts[1].source, "/etc/ssl");
    assert_true(c->mounts[1].read_only);
    vmfile_free(f);
    parse_bad("vm \"dev\" {\n    mount \"src\" \"rel\"\n}\n", VMCTL_E_VMFILE_VALIDATION, "2", "17",
              "target", "absolute");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_mapping), cmocka_unit_test(test_image_forms),
        cmocka_unit_test(test_v1_document),  cmocka_unit_test(test_validation),
        cmocka_unit_test(test_parse_failed), cmocka_unit_test(test_load),
        cmocka_unit_test(test_actions),      cmocka_unit_test(test_caps),
        cmocka_unit_test(test_scaling),      cmocka_unit_test(test_network_tap),
        cmocka_unit_test(test_jail_fields),  cmocka_unit_test(test_mounts),
        cmocka_unit_test(test_from_pool),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
