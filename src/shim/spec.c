/* SPDX-License-Identifier: MIT */
/* The OCI runtime spec as far as the shim honours it: the bundle's config.json (`process`,
 * `root`) and an Exec's process spec (the same `process` object, as JSON in a types.Any). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "shim.h"

void shim_spec_clear(shim_spec *s)
{
    for (size_t i = 0; s->argv && s->argv[i]; i++)
        free(s->argv[i]);
    for (size_t i = 0; s->env && s->env[i]; i++)
        free(s->env[i]);
    free(s->argv);
    free(s->env);
    free(s->cwd);
    free(s->user);
    *s = (shim_spec){0};
}

static char **strv_of(json_t *a)
{
    size_t n = json_is_array(a) ? json_array_size(a) : 0;
    char **v = calloc(n + 1, sizeof(char *));
    if (!v)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(a, i));
        if (s && !(v[k++] = strdup(s)))
            return v; /* short: the caller sees a truncated list only on OOM */
    }
    return v;
}

static int spec_of_process(json_t *p, shim_spec *ret, char **err)
{
    if (!json_is_object(p)) {
        *err = strdup("the OCI spec has no process object");
        return -EINVAL;
    }
    shim_spec s = {0};
    s.argv = strv_of(json_object_get(p, "args"));
    s.env = strv_of(json_object_get(p, "env"));
    if (!s.argv || !s.env || !s.argv[0]) {
        shim_spec_clear(&s);
        *err = strdup("the OCI process has no args");
        return -EINVAL;
    }
    const char *cwd = json_string_value(json_object_get(p, "cwd"));
    s.cwd = strdup(cwd && *cwd ? cwd : "/");
    json_t *u = json_object_get(p, "user");
    json_int_t uid = json_integer_value(json_object_get(u, "uid"));
    json_int_t gid = json_integer_value(json_object_get(u, "gid"));
    char buf[64];
    snprintf(buf, sizeof(buf), "%lld:%lld", (long long)uid, (long long)gid);
    s.user = strdup(buf);
    s.terminal = json_is_true(json_object_get(p, "terminal"));
    if (!s.cwd || !s.user) {
        shim_spec_clear(&s);
        return -ENOMEM;
    }
    *ret = s;
    return 0;
}

int shim_spec_from_json(const char *json, size_t len, shim_spec *ret, char **err)
{
    json_error_t je;
    json_t *p = json_loadb(json, len, 0, &je);
    if (!p) {
        if (asprintf(err, "invalid process spec: %s", je.text) < 0)
            *err = NULL;
        return -EINVAL;
    }
    int r = spec_of_process(p, ret, err);
    json_decref(p);
    return r;
}

int shim_bundle_load(const char *bundle, shim_spec *ret, char **root_path, bool *root_ro,
                     char **err)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/config.json", bundle);
    json_error_t je;
    json_t *c = json_load_file(path, 0, &je);
    if (!c) {
        if (asprintf(err, "cannot read '%s': %s", path, je.text) < 0)
            *err = NULL;
        return -EINVAL;
    }
    int r = spec_of_process(json_object_get(c, "process"), ret, err);
    if (r < 0) {
        json_decref(c);
        return r;
    }
    json_t *root = json_object_get(c, "root");
    const char *rp = json_string_value(json_object_get(root, "path"));
    *root_ro = json_is_true(json_object_get(root, "readonly"));
    if (!rp || !*rp)
        rp = "rootfs";
    if (rp[0] == '/')
        *root_path = strdup(rp);
    else if (asprintf(root_path, "%s/%s", bundle, rp) < 0)
        *root_path = NULL;
    json_decref(c);
    if (!*root_path) {
        shim_spec_clear(ret);
        return -ENOMEM;
    }
    return 0;
}

void shim_volumes_free(shim_volume *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].source);
        free(v[i].dest);
    }
    free(v);
}

/* A destination the guest's shell script can take as it is, outside the kernel's own trees. */
static bool dest_ok(const char *d)
{
    if (d[0] != '/' || strstr(d, ".."))
        return false;
    for (const char *c = d; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              strchr("/._-+@", *c)))
            return false;
    static const char *const kernel[] = {"/proc", "/sys", "/dev"};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(kernel[i]);
        if (!strncmp(d, kernel[i], n) && (d[n] == 0 || d[n] == '/'))
            return false;
    }
    return strcmp(d, "/") != 0;
}

int shim_bundle_volumes(const char *bundle, shim_volume **ret, size_t *n)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/config.json", bundle);
    json_t *c = json_load_file(path, 0, NULL);
    json_t *mounts = json_object_get(c, "mounts");
    size_t cap = json_is_array(mounts) ? json_array_size(mounts) : 0, k = 0;
    shim_volume *v = calloc(cap + 1, sizeof(*v));
    if (!v) {
        json_decref(c);
        return -ENOMEM;
    }
    for (size_t i = 0; i < cap; i++) {
        json_t *m = json_array_get(mounts, i);
        const char *type = json_string_value(json_object_get(m, "type"));
        const char *src = json_string_value(json_object_get(m, "source"));
        const char *dst = json_string_value(json_object_get(m, "destination"));
        json_t *opts = json_object_get(m, "options");
        bool bind = type && !strcmp(type, "bind"), ro = false;
        for (size_t o = 0; o < json_array_size(opts); o++) {
            const char *s = json_string_value(json_array_get(opts, o));
            bind |= s && (!strcmp(s, "bind") || !strcmp(s, "rbind"));
            ro |= s && !strcmp(s, "ro");
        }
        struct stat st;
        if (!bind || !src || !dst)
            continue;
        if (!dest_ok(dst) || stat(src, &st) < 0 || !S_ISDIR(st.st_mode)) {
            shim_log("mount of '%s' on '%s' left out: only host directories, on plain paths "
                     "outside /proc, /sys and /dev, are shared with the VM",
                     src, dst);
            continue;
        }
        v[k].source = strdup(src);
        v[k].dest = strdup(dst);
        v[k].read_only = ro;
        if (!v[k].source || !v[k].dest) {
            shim_volumes_free(v, k + 1);
            json_decref(c);
            return -ENOMEM;
        }
        k++;
    }
    json_decref(c);
    *ret = v;
    *n = k;
    return 0;
}

int shim_bundle_netns(const char *bundle, char **ret)
{
    *ret = NULL;
    char path[4096];
    snprintf(path, sizeof(path), "%s/config.json", bundle);
    json_t *c = json_load_file(path, 0, NULL);
    if (!c)
        return -EINVAL;
    /* CRI's sandbox (pause) container does nothing with the pod's network: the pod's first
     * application container takes it over (one VM per namespace) */
    const char *kind = json_string_value(
        json_object_get(json_object_get(c, "annotations"), "io.kubernetes.cri.container-type"));
    if (kind && strcmp(kind, "sandbox") == 0) {
        json_decref(c);
        return 0;
    }
    json_t *ns = json_object_get(json_object_get(c, "linux"), "namespaces");
    size_t i;
    json_t *n;
    int r = 0;
    json_array_foreach(ns, i, n)
    {
        const char *type = json_string_value(json_object_get(n, "type"));
        const char *p = json_string_value(json_object_get(n, "path"));
        if (type && strcmp(type, "network") == 0 && p && p[0] == '/') {
            if (asprintf(ret, "netns:%s", p) < 0) {
                *ret = NULL;
                r = -ENOMEM;
            }
            break;
        }
    }
    json_decref(c);
    return r;
}
