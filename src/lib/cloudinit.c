/* SPDX-License-Identifier: MIT */
/* cloud-init NoCloud seed ISOs. Our own ISO 9660 writer makes them (iso9660.c); genisoimage or
 * xorriso are the fallback when asked for (VMCTL_SEED_TOOL) or when our writer refuses the
 * input. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cloudinit.h"
#include "error.h"
#include "image-format.h"
#include "iso9660.h"
#include "util/util.h"

/* DHCP on the first NIC, matched by the MAC QEMU gives it by default (CLOUDINIT_NIC_MAC) and
 * named eth0: cloud-init's ENI renderer (Debian) cannot match interface names by glob. */
static const char network_config[] = "version: 2\n"
                                     "ethernets:\n"
                                     "  eth0:\n"
                                     "    match:\n"
                                     "      macaddress: \"" CLOUDINIT_NIC_MAC "\"\n"
                                     "    set-name: eth0\n"
                                     "    dhcp4: true\n";

/* what: why, where errnum does not say it all (NULL: errnum is the cause) */
static int iso_failed(vmctl_error **reterr, int errnum, const char *path, const char *what)
{
    int r = err_make(reterr, VMCTL_E_CLOUDINIT_ISO_FAILED, errnum,
                     "cannot write the cloud-init seed '%s'%s%s", path, what ? ": " : "",
                     what ? what : "");
    err_detail(reterr, "path", "%s", path);
    if (!what)
        err_cause(reterr, errnum); /* a system call's: shown even if it is EIO */
    return r;
}

/* A key file's first line with a key type, or -EINVAL. */
static int read_key(const char *path, char **ret)
{
    cleanup_free char *text = NULL;
    int r = read_file(path, &text, NULL);
    if (r < 0)
        return r;
    char *line = text;
    while (*line == '\n' || *line == ' ' || *line == '\r')
        line++;
    line[strcspn(line, "\r\n")] = 0;
    if (!str_startswith(line, "ssh-") && !str_startswith(line, "ecdsa-") &&
        !str_startswith(line, "sk-"))
        return -EINVAL;
    if (strpbrk(line, "\"\\"))
        return -EINVAL;
    *ret = strdup(line);
    return *ret ? 0 : -ENOMEM;
}

int cloudinit_default_user_data(const char *user, const char *key, const char *vm_key, char **ret)
{
    if (!user)
        user = "vmctl";
    cleanup_free char *keys = NULL;
    if (key || vm_key) {
        keys = str_printf("    ssh_authorized_keys:\n%s%s%s%s%s%s", key ? "      - \"" : "",
                          key ? key : "", key ? "\"\n" : "", vm_key ? "      - \"" : "",
                          vm_key ? vm_key : "", vm_key ? "\"\n" : "");
        if (!keys)
            return -ENOMEM;
    }
    char *s = str_printf("#cloud-config\n"
                         "users:\n"
                         "  - default\n"
                         "  - name: %s\n"
                         "    shell: /bin/bash\n"
                         "    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n"
                         "    lock_passwd: true\n"
                         "%s"
                         "ssh_pwauth: false\n",
                         user, keys ? keys : "");
    if (!s)
        return -ENOMEM;
    *ret = s;
    return 0;
}

struct seed_files {
    char *user_data;
    size_t user_len;
    char *meta_data;
};

static void seed_files_clear(struct seed_files *f)
{
    free(f->user_data);
    free(f->meta_data);
}

static int make_files(const cloudinit_seed *seed, const char *path, struct seed_files *f,
                      vmctl_error **reterr)
{
    if (!seed || !seed->hostname || !name_is_valid(seed->hostname))
        return iso_failed(reterr, EINVAL, path, "a valid hostname is required");
    int r;
    if (seed->user_data) {
        r = read_file(seed->user_data, &f->user_data, &f->user_len);
        if (r < 0) {
            r = iso_failed(reterr, -r, path, "cannot read the user-data file");
            err_detail(reterr, "user_data", "%s", seed->user_data);
            return r;
        }
    } else {
        cleanup_free char *key = NULL, *vm_key = NULL;
        const char *paths[2] = {seed->ssh_key, seed->vm_ssh_key};
        char **texts[2] = {&key, &vm_key};
        for (int i = 0; i < 2; i++) {
            if (!paths[i] || (i == 1 && seed->ssh_key && streq(paths[0], paths[1])))
                continue;
            if ((r = read_key(paths[i], texts[i])) < 0) {
                r = iso_failed(reterr, -r, path,
                               r == -EINVAL ? "the SSH key file holds no public key"
                                            : "cannot read the SSH key file");
                err_detail(reterr, "ssh_key", "%s", paths[i]);
                err_help(reterr, "Pass an OpenSSH public key (a .pub file) to --ssh-key.");
                return r;
            }
        }
        if ((r = cloudinit_default_user_data(seed->user, key, vm_key, &f->user_data)) < 0)
            return iso_failed(reterr, -r, path, "out of memory");
        f->user_len = strlen(f->user_data);
    }
    char rnd[17];
    if (!seed->instance_id) {
        uint8_t b[8] = {};
        if (getrandom(b, sizeof(b), 0) != sizeof(b))
            memset(b, 0, sizeof(b));
        for (int i = 0; i < 8; i++)
            snprintf(rnd + 2 * i, 3, "%02x", b[i]);
    }
    f->meta_data = seed->instance_id ? str_printf("instance-id: %s\nlocal-hostname: %s\n",
                                                  seed->instance_id, seed->hostname)
                                     : str_printf("instance-id: %s-%s\nlocal-hostname: %s\n",
                                                  seed->hostname, rnd, seed->hostname);
    if (!f->meta_data)
        return iso_failed(reterr, ENOMEM, path, "out of memory");
    return 0;
}

int cloudinit_write_files(const char *dir, const cloudinit_seed *seed, vmctl_error **reterr)
{
    struct seed_files f = {};
    int r = make_files(seed, dir, &f, reterr);
    if (r < 0) {
        seed_files_clear(&f);
        return r;
    }
    const char *names[] = {"user-data", "meta-data", "network-config"};
    const char *nc = seed->network_config ? seed->network_config : network_config;
    const char *data[] = {f.user_data, f.meta_data, nc};
    size_t lens[] = {f.user_len, strlen(f.meta_data), strlen(nc)};
    for (int i = 0; i < (seed->network ? 3 : 2) && r >= 0; i++) {
        cleanup_free char *p = str_printf("%s/%s", dir, names[i]);
        r = p ? write_file_atomic(p, data[i], lens[i], 0600) : -ENOMEM;
        if (r < 0)
            r = iso_failed(reterr, -r, dir, "cannot write the seed files");
    }
    seed_files_clear(&f);
    return r;
}

static int write_with_tool(const char *path, const cloudinit_seed *seed, const char *tool,
                           vmctl_error **reterr)
{
    cleanup_free char *bin = find_in_path(tool);
    if (!bin) {
        int r = iso_failed(reterr, ENOENT, path, "the ISO tool is not installed");
        err_detail(reterr, "tool", "%s", tool);
        err_help(reterr, "Install the Debian package '%s'.", tool);
        return r;
    }
    cleanup_free char *dir = str_printf("%s.d", path);
    if (!dir)
        return -ENOMEM;
    (void)rm_rf(dir);
    if (mkdir(dir, 0700) < 0)
        return iso_failed(reterr, errno, path, "cannot create a staging directory");
    int r = cloudinit_write_files(dir, seed, reterr);
    if (r >= 0) {
        cleanup_free char *tmp = str_printf("%s.tmp", path);
        cleanup_free char *ud = str_printf("%s/user-data", dir);
        cleanup_free char *md = str_printf("%s/meta-data", dir);
        cleanup_free char *nc = str_printf("%s/network-config", dir);
        char *gen[] = {bin,
                       "-quiet",
                       "-output",
                       tmp,
                       "-volid",
                       "cidata",
                       "-joliet",
                       "-rock",
                       ud,
                       md,
                       seed->network ? nc : NULL,
                       NULL};
        char * xor [] = {bin,
                         "-as",
                         "mkisofs",
                         "-quiet",
                         "-o",
                         tmp,
                         "-V",
                         "cidata",
                         "-J",
                         "-R",
                         ud,
                         md,
                         seed->network ? nc : NULL,
                         NULL};
        cleanup_free char *errs = NULL;
        int k = image_run(streq(tool, "xorriso") ? xor : gen, NULL, &errs, 30);
        if (k != 0) {
            r = iso_failed(reterr, k < 0 ? -k : EIO, path, "the ISO tool failed");
            err_detail(reterr, "tool", "%s", tool);
            if (errs && *errs)
                err_note(reterr, "%s", errs);
            (void)unlink(tmp);
        } else if (chmod(tmp, 0600) < 0 || rename(tmp, path) < 0) {
            r = iso_failed(reterr, errno, path, NULL); /* the tool obeys the umask */
            (void)unlink(tmp);
        }
    }
    (void)rm_rf(dir);
    return r;
}

int cloudinit_write_seed(const char *path, const cloudinit_seed *seed, vmctl_error **reterr)
{
    const char *tool = getenv("VMCTL_SEED_TOOL");
    if (tool && *tool && !streq(tool, "builtin"))
        return write_with_tool(path, seed, tool, reterr);
    struct seed_files f = {};
    int r = make_files(seed, path, &f, reterr);
    if (r < 0) {
        seed_files_clear(&f);
        return r;
    }
    iso_file files[3] = {
        {"user-data", f.user_data, f.user_len},
        {"meta-data", f.meta_data, strlen(f.meta_data)},
        {"network-config", seed->network_config ? seed->network_config : network_config,
         strlen(seed->network_config ? seed->network_config : network_config)},
    };
    r = iso9660_write(path, "cidata", files, seed->network ? 3 : 2,
                      (int64_t)(realtime_usec() / 1000000));
    seed_files_clear(&f);
    if (r == -EINVAL) {
        /* our writer refuses it (e.g. a name it cannot encode): the external tools may not */
        cleanup_free char *gen = find_in_path("genisoimage");
        const char *fallback = gen ? "genisoimage" : "xorriso";
        return write_with_tool(path, seed, fallback, reterr);
    }
    if (r < 0)
        return iso_failed(reterr, -r, path, NULL);
    return 0;
}
