/* SPDX-License-Identifier: MIT */
/* The shim's pure parts: the protobuf writer (against protoc-c's own encoding of the same
 * messages), the VM and socket names of a task, the OCI spec reader. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "shim.h"
#include "shim.pb-c.h"

/* DeleteResponse written by hand (as `delete` prints it) decodes with protoc-c's reader */
static void test_pbw_delete_response(void **state)
{
    (void)state;
    pbw w = {0};
    struct timespec ts = {.tv_sec = 1764806400, .tv_nsec = 123456789};
    pbw_varint_field(&w, 1, 4242);
    pbw_varint_field(&w, 2, 137);
    pbw_timestamp_field(&w, 3, &ts);
    assert_false(w.oom);
    Containerd__Task__V2__DeleteResponse *r =
        containerd__task__v2__delete_response__unpack(NULL, w.len, w.buf);
    assert_non_null(r);
    assert_int_equal(r->pid, 4242);
    assert_int_equal(r->exit_status, 137);
    assert_non_null(r->exited_at);
    assert_int_equal(r->exited_at->seconds, 1764806400);
    assert_int_equal(r->exited_at->nanos, 123456789);
    containerd__task__v2__delete_response__free_unpacked(r, NULL);
    pbw_free(&w);
    /* proto3: zero fields are left out, strings too */
    pbw_varint_field(&w, 1, 0);
    pbw_str_field(&w, 2, "");
    pbw_str_field(&w, 2, NULL);
    assert_int_equal(w.len, 0);
    pbw_free(&w);
}

/* a StateResponse's strings and a nested message as protoc-c writes them */
static void test_pbw_matches_protoc_c(void **state)
{
    (void)state;
    Containerd__Task__V2__StartRequest m = CONTAINERD__TASK__V2__START_REQUEST__INIT;
    m.id = "c1";
    m.exec_id = "exec-with-a-longer-name";
    size_t n = containerd__task__v2__start_request__get_packed_size(&m);
    uint8_t *want = malloc(n);
    containerd__task__v2__start_request__pack(&m, want);
    pbw w = {0};
    pbw_str_field(&w, 1, "c1");
    pbw_str_field(&w, 2, "exec-with-a-longer-name");
    assert_int_equal(w.len, n);
    assert_memory_equal(w.buf, want, n);
    free(want);
    pbw_free(&w);
    /* a varint over 7 bits */
    pbw_varint_field(&w, 1, 300);
    uint8_t v[] = {0x08, 0xac, 0x02};
    assert_int_equal(w.len, sizeof(v));
    assert_memory_equal(w.buf, v, sizeof(v));
    pbw_free(&w);
}

static void assert_valid_vm_name(const char *s)
{
    size_t n = strlen(s);
    assert_true(n >= 1 && n <= 63);
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        assert_true((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.');
    }
}

static void test_names(void **state)
{
    (void)state;
    /* a Kubernetes container id: 64 hex digits */
    const char *id = "4f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
    char *a = shim_vm_name("k8s.io", id);
    char *b = shim_vm_name("default", id);
    char *c = shim_vm_name("default", "my/odd id");
    assert_valid_vm_name(a);
    assert_valid_vm_name(b);
    assert_valid_vm_name(c);
    assert_string_not_equal(a, b); /* the namespace is part of it */
    assert_non_null(strstr(c, "my_odd_id"));
    free(a);
    free(b);
    free(c);
    shim_opts.address = "/run/containerd/containerd.sock";
    char *p1 = shim_socket_path("default", "x");
    shim_opts.address = "/tmp/other/containerd.sock";
    char *p2 = shim_socket_path("default", "x");
    assert_string_not_equal(p1, p2); /* two containerds, two sockets */
    assert_true(strlen(p1) < 108);   /* sun_path */
    free(p1);
    free(p2);
}

static void test_spec(void **state)
{
    (void)state;
    static const char json[] =
        "{\"args\":[\"sh\",\"-c\",\"exit 5\"],\"env\":[\"PATH=/bin\",\"A=1\"],\"cwd\":\"/tmp\","
        "\"user\":{\"uid\":1000,\"gid\":100},\"terminal\":true}";
    shim_spec s = {0};
    char *err = NULL;
    assert_int_equal(shim_spec_from_json(json, strlen(json), &s, &err), 0);
    assert_string_equal(s.argv[0], "sh");
    assert_string_equal(s.argv[2], "exit 5");
    assert_null(s.argv[3]);
    assert_string_equal(s.env[1], "A=1");
    assert_null(s.env[2]);
    assert_string_equal(s.cwd, "/tmp");
    assert_string_equal(s.user, "1000:100");
    assert_true(s.terminal);
    shim_spec_clear(&s);
    /* no args: refused; not JSON: refused, saying why */
    assert_int_equal(shim_spec_from_json("{\"args\":[]}", 11, &s, &err), -EINVAL);
    assert_non_null(err);
    free(err);
    err = NULL;
    assert_int_equal(shim_spec_from_json("{", 1, &s, &err), -EINVAL);
    assert_non_null(strstr(err, "invalid process spec"));
    free(err);
    err = NULL;

    /* a bundle: root.path relative to it, readonly; defaults: cwd /, user 0:0 */
    char dir[] = "/tmp/test-shim.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"process\":{\"args\":[\"true\"]},\"root\":{\"path\":\"rootfs\",\"readonly\":true}}",
          f);
    fclose(f);
    char *root = NULL;
    bool ro = false;
    assert_int_equal(shim_bundle_load(dir, &s, &root, &ro, &err), 0);
    char want[300];
    snprintf(want, sizeof(want), "%s/rootfs", dir);
    assert_string_equal(root, want);
    assert_true(ro);
    assert_string_equal(s.cwd, "/");
    assert_string_equal(s.user, "0:0");
    assert_false(s.terminal);
    shim_spec_clear(&s);
    free(root);
    /* the network namespace: none, a new one (no path), the pod's; CRI's sandbox takes none */
    char *net = NULL;
    assert_int_equal(shim_bundle_netns(dir, &net), 0);
    assert_null(net);
    static const struct {
        const char *json, *want;
    } nets[] = {
        {"{\"linux\":{\"namespaces\":[{\"type\":\"network\"}]}}", NULL},
        {"{\"linux\":{\"namespaces\":[{\"type\":\"pid\"},{\"type\":\"network\",\"path\":"
         "\"/var/run/netns/cni-1\"}]}}",
         "netns:/var/run/netns/cni-1"},
        {"{\"linux\":{\"namespaces\":[{\"type\":\"network\",\"path\":\"rel/x\"}]}}", NULL},
        {"{\"annotations\":{\"io.kubernetes.cri.container-type\":\"sandbox\"},\"linux\":{"
         "\"namespaces\":[{\"type\":\"network\",\"path\":\"/var/run/netns/cni-1\"}]}}",
         NULL},
    };
    for (size_t i = 0; i < sizeof(nets) / sizeof(nets[0]); i++) {
        f = fopen(path, "w");
        assert_non_null(f);
        fputs(nets[i].json, f);
        fclose(f);
        assert_int_equal(shim_bundle_netns(dir, &net), 0);
        if (nets[i].want)
            assert_string_equal(net, nets[i].want);
        else
            assert_null(net);
        free(net);
        net = NULL;
    }
    unlink(path);
    rmdir(dir);
    assert_int_equal(shim_bundle_netns(dir, &net), -EINVAL);
    /* no config.json */
    assert_int_equal(shim_bundle_load(dir, &s, &root, &ro, &err), -EINVAL);
    assert_non_null(strstr(err, "config.json"));
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pbw_delete_response),
        cmocka_unit_test(test_pbw_matches_protoc_c),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_spec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
