/* SPDX-License-Identifier: MIT */
/* Image formats, qcow2 overlays and the ISO 9660 writer, checked against tools we did not
 * write: every format is detected from a real file made by `qemu-img create -f FMT`, our
 * overlays pass `qemu-img check` and `qemu-img info` reads their backing file, and our seed
 * ISOs are read back by `isoinfo` (genisoimage) and `blkid`. Tests needing a missing tool skip
 * themselves, saying so (skip.h: a failure under CI=true). */
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
#include <unistd.h>

#include <cmocka.h>

#include "cloudinit.h"
#include "error.h"
#include "image-format.h"
#include "iso9660.h"
#include "qcow2.h"
#include "skip.h"
#include "util/util.h"
#include "vm-spec.h"

static char tmpdir[] = "/tmp/test-image-XXXXXX";

static char *tmp(const char *name)
{
    char *p = str_printf("%s/%s", tmpdir, name);
    assert_non_null(p);
    return p;
}

static bool have(const char *tool)
{
    cleanup_free char *p = find_in_path(tool);
    return p != NULL;
}

/* Run argv; returns exit status, stdout in *out (may be NULL). */
static int run(char **out, const char *first, ...)
{
    char *argv[32];
    int n = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && n < 31; a = va_arg(ap, const char *))
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    cleanup_free char *errs = NULL;
    int r = image_run(argv, out, &errs, 60);
    if (r != 0 && errs)
        fprintf(stderr, "%s: %s", first, errs);
    return r;
}

static void test_detect_qemu_img_formats(void **state)
{
    if (!have("qemu-img"))
        skip_test(NULL, "qemu-img is not installed (apt-get install qemu-utils)");
    static const char *const fmts[] = {"qcow2", "raw", "vmdk", "vhdx", "vdi", "vpc"};
    for (size_t i = 0; i < ELEMENTSOF(fmts); i++) {
        cleanup_free char *p = tmp(fmts[i]);
        assert_int_equal(run(NULL, "qemu-img", "create", "-q", "-f", fmts[i], p, "64M", NULL), 0);
        image_probe pr = {};
        vmctl_error *e = NULL;
        assert_int_equal(image_probe_file(p, &pr, &e), 0);
        assert_string_equal(pr.format, fmts[i]);
        if (!streq(fmts[i], "vhdx") && !streq(fmts[i], "vpc"))
            assert_int_equal(pr.virtual_size, 64ull << 20);
        image_probe_clear(&pr);
        /* with qemu-img as second opinion */
        assert_int_equal(image_detect(p, &pr, &e), 0);
        assert_string_equal(pr.format, fmts[i]);
        assert_true(pr.virtual_size >= 64ull << 20);
        image_probe_clear(&pr);
    }
}

static void test_detect_iso_and_errors(void **state)
{
    cleanup_free char *iso = tmp("probe.iso");
    iso_file f = {"hello.txt", "hi\n", 3};
    assert_int_equal(iso9660_write(iso, "TESTVOL", &f, 1, 0), 0);
    image_probe pr = {};
    vmctl_error *e = NULL;
    assert_int_equal(image_probe_file(iso, &pr, &e), 0);
    assert_string_equal(pr.format, "iso");
    image_probe_clear(&pr);
    if (have("qemu-img")) { /* qemu-img calls it raw: still an agreement */
        assert_int_equal(image_detect(iso, &pr, &e), 0);
        assert_string_equal(pr.format, "iso");
        image_probe_clear(&pr);
    } else {
        skip_part(NULL,
                  "the ISO detected by qemu-img: it is not installed (apt-get install qemu-utils)");
    }

    /* empty file */
    cleanup_free char *empty = tmp("empty");
    assert_int_equal(write_file_atomic(empty, "", 0, 0644), 0);
    assert_int_equal(image_probe_file(empty, &pr, &e), -ENODATA);
    assert_int_equal(vmctl_error_get_kind(e), VMCTL_E_IMAGE_FORMAT_DETECTION_FAILED);
    assert_string_equal(vmctl_error_find_detail(e, "path"), empty);
    vmctl_error_free(e);
    e = NULL;

    /* a qcow2 header whose tables lie past the end (a truncated download) */
    cleanup_free char *q = tmp("trunc.qcow2");
    assert_int_equal(qcow2_create_overlay(q, 1ull << 30, NULL, NULL, &e), 0);
    assert_int_equal(truncate(q, 65536 + 100), 0);
    assert_int_equal(image_probe_file(q, &pr, &e), -EINVAL);
    assert_int_equal(vmctl_error_get_kind(e), VMCTL_E_IMAGE_FORMAT_DETECTION_FAILED);
    vmctl_error_free(e);
    e = NULL;

    /* corrupt version */
    uint8_t buf[512] = "QFI\xfb";
    buf[7] = 9;
    const char *why = NULL;
    assert_int_equal(image_probe_buffer(buf, sizeof(buf), sizeof(buf), &pr, &why), -EINVAL);
    assert_non_null(why);
    /* anything else is raw */
    memset(buf, 0x55, sizeof(buf));
    assert_int_equal(image_probe_buffer(buf, sizeof(buf), 1 << 20, &pr, &why), 0);
    assert_string_equal(pr.format, "raw");
    assert_int_equal(pr.virtual_size, 1 << 20);
}

static void test_overlay_passes_qemu_img_check(void **state)
{
    if (!have("qemu-img"))
        skip_test(NULL, "qemu-img is not installed (apt-get install qemu-utils)");
    cleanup_free char *base = tmp("base.qcow2");
    cleanup_free char *ov = tmp("overlay.qcow2");
    cleanup_free char *big = tmp("big.qcow2");
    assert_int_equal(run(NULL, "qemu-img", "create", "-q", "-f", "qcow2", base, "1G", NULL), 0);
    vmctl_error *e = NULL;
    assert_int_equal(qcow2_create_overlay(ov, 1ull << 30, base, "qcow2", &e), 0);
    assert_int_equal(run(NULL, "qemu-img", "check", "-q", ov, NULL), 0);
    cleanup_free char *out = NULL;
    assert_int_equal(run(&out, "qemu-img", "info", "--output=json", ov, NULL), 0);
    assert_non_null(strstr(out, "\"backing-filename\": \""));
    assert_non_null(strstr(out, base));
    assert_non_null(strstr(out, "\"backing-filename-format\": \"qcow2\""));
    assert_non_null(strstr(out, "\"virtual-size\": 1073741824"));
    /* a grown one (--disk): 3 TiB needs several L1 entries */
    assert_int_equal(qcow2_create_overlay(big, 3ull << 40, base, "qcow2", &e), 0);
    assert_int_equal(run(NULL, "qemu-img", "check", "-q", big, NULL), 0);
    /* our own parser reads what we wrote */
    image_probe pr = {};
    assert_int_equal(image_probe_file(big, &pr, &e), 0);
    assert_string_equal(pr.backing_file, base);
    assert_string_equal(pr.backing_format, "qcow2");
    assert_int_equal(pr.virtual_size, 3ull << 40);
    image_probe_clear(&pr);
    /* writes through the overlay land in the overlay, and it stays consistent */
    assert_int_equal(
        run(NULL, "qemu-io", "-c", "write -P 0xab 0 1M", "-c", "write 900M 64k", ov, NULL), 0);
    assert_int_equal(run(NULL, "qemu-img", "check", "-q", ov, NULL), 0);
    /* O_EXCL: never overwrite */
    assert_int_equal(qcow2_create_overlay(ov, 1ull << 30, base, "qcow2", &e), -EEXIST);
    assert_int_equal(vmctl_error_get_kind(e), VMCTL_E_IMAGE_OVERLAY_CREATION_FAILED);
    vmctl_error_free(e);
}

static void test_iso_read_back(void **state)
{
    if (!have("isoinfo"))
        skip_test(NULL, "isoinfo is not installed (apt-get install genisoimage)");
    cleanup_free char *iso = tmp("seed.iso");
    char big[5000];
    memset(big, 'x', sizeof(big));
    iso_file files[] = {
        {"user-data", "#cloud-config\n", 14},
        {"meta-data", "instance-id: a\n", 15},
        {"network-config", "version: 2\n", 11},
        {"big-file.bin", big, sizeof(big)},
        {"empty", "", 0},
    };
    assert_int_equal(iso9660_write(iso, "cidata", files, ELEMENTSOF(files), 1700000000), 0);
    cleanup_free char *list = NULL;
    assert_int_equal(run(&list, "isoinfo", "-i", iso, "-J", "-f", NULL), 0);
    assert_non_null(strstr(list, "/user-data\n"));
    assert_non_null(strstr(list, "/meta-data\n"));
    assert_non_null(strstr(list, "/network-config\n"));
    assert_non_null(strstr(list, "/big-file.bin\n"));
    for (size_t i = 0; i < ELEMENTSOF(files); i++) {
        cleanup_free char *path = str_printf("/%s", files[i].name);
        cleanup_free char *content = NULL;
        assert_int_equal(run(&content, "isoinfo", "-i", iso, "-J", "-x", path, NULL), 0);
        assert_int_equal(strlen(content), files[i].len);
        assert_memory_equal(content, files[i].data, files[i].len);
    }
    cleanup_free char *pvd = NULL;
    assert_int_equal(run(&pvd, "isoinfo", "-i", iso, "-d", NULL), 0);
    assert_non_null(strstr(pvd, "Volume id: cidata"));
    assert_non_null(strstr(pvd, "Joliet"));
    if (have("blkid")) {
        cleanup_free char *label = NULL;
        assert_int_equal(run(&label, "blkid", "-p", "-s", "LABEL", "-o", "value", iso, NULL), 0);
        assert_string_equal(label, "cidata\n");
    } else {
        skip_part(NULL,
                  "the ISO label read back: blkid is not installed (apt-get install util-linux)");
    }
    if (have("xorriso")) {
        cleanup_free char *x = NULL;
        assert_int_equal(
            run(&x, "xorriso", "-indev", iso, "-find", "/", "-name", "user-data", NULL), 0);
        assert_non_null(strstr(x, "user-data"));
    } else {
        skip_part(NULL,
                  "the ISO read back by xorriso: it is not installed (apt-get install xorriso)");
    }
    /* bad names */
    uint8_t *img = NULL;
    size_t len = 0;
    iso_file bad[] = {{"a/b", "", 0}};
    assert_int_equal(iso9660_build("x", bad, 1, 0, &img, &len), -EINVAL);
    iso_file dup[] = {{"same", "", 0}, {"same", "", 0}};
    assert_int_equal(iso9660_build("x", dup, 2, 0, &img, &len), -EINVAL);
}

static void test_cloudinit_seed(void **state)
{
    if (!have("isoinfo"))
        skip_test(NULL, "isoinfo is not installed (apt-get install genisoimage)");
    cleanup_free char *key = tmp("key.pub");
    const char k[] = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBOGUS test@host\n";
    assert_int_equal(write_file_atomic(key, k, strlen(k), 0644), 0);
    cleanup_free char *seed = tmp("ci.iso");
    cloudinit_seed s = {.hostname = "web-1", .ssh_key = key, .network = true};
    vmctl_error *e = NULL;
    assert_int_equal(cloudinit_write_seed(seed, &s, &e), 0);
    cleanup_free char *ud = NULL, *md = NULL, *nc = NULL;
    assert_int_equal(run(&ud, "isoinfo", "-i", seed, "-J", "-x", "/user-data", NULL), 0);
    assert_int_equal(run(&md, "isoinfo", "-i", seed, "-J", "-x", "/meta-data", NULL), 0);
    assert_int_equal(run(&nc, "isoinfo", "-i", seed, "-J", "-x", "/network-config", NULL), 0);
    assert_true(str_startswith(ud, "#cloud-config\n"));
    assert_non_null(strstr(ud, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBOGUS test@host"));
    assert_non_null(strstr(ud, "NOPASSWD:ALL"));
    assert_non_null(strstr(md, "local-hostname: web-1\n"));
    assert_true(str_startswith(md, "instance-id: web-1-"));
    assert_non_null(strstr(nc, "version: 2"));

    /* the user's key and the VM's own key are both authorized */
    cleanup_free char *vmkey = tmp("vm.pub");
    const char k2[] = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIVMKEY vm@vmctl\n";
    assert_int_equal(write_file_atomic(vmkey, k2, strlen(k2), 0644), 0);
    cloudinit_seed sb = {.hostname = "web-9", .ssh_key = key, .vm_ssh_key = vmkey};
    cleanup_free char *seedb = tmp("cib.iso");
    assert_int_equal(cloudinit_write_seed(seedb, &sb, &e), 0);
    cleanup_free char *udb = NULL;
    assert_int_equal(run(&udb, "isoinfo", "-i", seedb, "-J", "-x", "/user-data", NULL), 0);
    assert_non_null(strstr(udb, "AAAAIBOGUS test@host"));
    assert_non_null(strstr(udb, "AAAAIVMKEY vm@vmctl"));

    /* the user's own user-data is passed through byte for byte */
    cleanup_free char *own = tmp("own-user-data");
    const char u[] = "#cloud-config\nhostname: custom\n";
    assert_int_equal(write_file_atomic(own, u, strlen(u), 0644), 0);
    cloudinit_seed s2 = {.hostname = "web-2", .user_data = own};
    cleanup_free char *seed2 = tmp("ci2.iso");
    assert_int_equal(cloudinit_write_seed(seed2, &s2, &e), 0);
    cleanup_free char *ud2 = NULL;
    assert_int_equal(run(&ud2, "isoinfo", "-i", seed2, "-J", "-x", "/user-data", NULL), 0);
    assert_string_equal(ud2, u);

    /* a file that is not a public key */
    cleanup_free char *notkey = tmp("notkey");
    assert_int_equal(write_file_atomic(notkey, "hello\n", 6, 0644), 0);
    cloudinit_seed s3 = {.hostname = "web-3", .ssh_key = notkey};
    cleanup_free char *seed3 = tmp("ci3.iso");
    assert_true(cloudinit_write_seed(seed3, &s3, &e) < 0);
    assert_int_equal(vmctl_error_get_kind(e), VMCTL_E_CLOUDINIT_ISO_FAILED);
    vmctl_error_free(e);
    e = NULL;

    /* the genisoimage fallback makes an equivalent seed */
    if (have("genisoimage")) {
        setenv("VMCTL_SEED_TOOL", "genisoimage", 1);
        cleanup_free char *seed4 = tmp("ci4.iso");
        assert_int_equal(cloudinit_write_seed(seed4, &s, &e), 0);
        unsetenv("VMCTL_SEED_TOOL");
        cleanup_free char *md4 = NULL;
        assert_int_equal(run(&md4, "isoinfo", "-i", seed4, "-J", "-x", "/meta-data", NULL), 0);
        assert_non_null(strstr(md4, "local-hostname: web-1\n"));
    } else {
        skip_part(NULL,
                  "the genisoimage fallback: it is not installed (apt-get install genisoimage)");
    }
}

static void test_sha256(void **state)
{
    cleanup_free char *p = tmp("abc");
    assert_int_equal(write_file_atomic(p, "abc", 3, 0644), 0);
    char hex[65];
    assert_int_equal(image_sha256_file(p, hex, NULL), 0);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

/* The fields disk images added to the stored VM spec round-trip, and specs stored before them
 * (without the keys) still load. */
static void test_spec_image_fields(void **state)
{
    vm_spec s = {.name = "a",
                 .backend = "qemu",
                 .machine = "q35",
                 .accel = "tcg",
                 .net = "user",
                 .image = "deb",
                 .disk = "/h/vms/a/disk.qcow2",
                 .disk_format = "qcow2",
                 .vcpus = 1,
                 .memory_mib = 256,
                 .base = "/h/images/deb/disk",
                 .base_format = "vmdk",
                 .seed = "/h/vms/a/seed.iso",
                 .agent = true};
    cleanup_free char *json = NULL;
    assert_int_equal(vm_spec_to_json(&s, &json), 0);
    vm_spec *back = NULL;
    assert_int_equal(vm_spec_from_json(json, &back, NULL), 0);
    assert_string_equal(back->disk_format, "qcow2");
    assert_string_equal(back->base, "/h/images/deb/disk");
    assert_string_equal(back->base_format, "vmdk");
    assert_string_equal(back->seed, "/h/vms/a/seed.iso");
    vm_spec_free(back);
    const char old[] = "{\"name\":\"a\",\"backend\":\"qemu\",\"machine\":\"microvm\","
                       "\"accel\":\"tcg\",\"vcpus\":1,\"memory_mib\":256,\"disk_gib\":0,"
                       "\"image\":\"default\",\"net\":\"none\",\"agent\":true}";
    assert_int_equal(vm_spec_from_json(old, &back, NULL), 0);
    assert_null(back->disk_format);
    assert_null(back->base);
    assert_null(back->seed);
    cleanup_free char *again = NULL;
    assert_int_equal(vm_spec_to_json(back, &again), 0);
    assert_null(strstr(again, "\"seed\""));
    vm_spec_free(back);
}

/* Images that name other files are told from self-contained ones, by our header parser alone
 * and with qemu-img's opinion. */
static void check_unsafe(const char *path, const char *key, const char *value, bool qemu_img)
{
    image_probe p = {};
    cleanup_error vmctl_error *e = NULL;
    assert_int_equal(image_probe_file(path, &p, &e), 0);
    assert_int_equal(image_check_self_contained(path, &p, qemu_img, &e), -EPERM);
    assert_string_equal(vmctl_error_get_code(e), "vm_manager::image::unsafe");
    if (value)
        assert_string_equal(vmctl_error_find_detail(e, key), value);
    image_probe_clear(&p);
}

static void test_self_contained(void **state)
{
    cleanup_free char *secret = tmp("secret"), *plain = tmp("plain.qcow2");
    cleanup_free char *bq = tmp("b.qcow2"), *df = tmp("df.qcow2"), *dfd = tmp("df.data");
    cleanup_free char *desc = tmp("d.vmdk"), *par = tmp("p.vmdk"), *child = tmp("c.vmdk");
    assert_int_equal(write_file_atomic(secret, "secret\n", 7, 0600), 0);
    /* ours: an overlay names its base */
    cleanup_error vmctl_error *e = NULL;
    assert_int_equal(qcow2_create_overlay(bq, 1 << 20, secret, "raw", &e), 0);
    check_unsafe(bq, "backing_file", secret, false);
    /* a vmdk descriptor has no data of its own */
    char text[512];
    int n = snprintf(text, sizeof(text),
                     "# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\n"
                     "RW 2048 FLAT \"%s\" 0\n",
                     secret);
    assert_int_equal(write_file_atomic(desc, text, (size_t)n, 0600), 0);
    check_unsafe(desc, "data_file", secret, false);
    if (!have("qemu-img")) {
        print_message("qemu-img is not installed: its images are not checked\n");
        return;
    }
    assert_int_equal(run(NULL, "qemu-img", "create", "-q", "-f", "qcow2", plain, "1M", NULL), 0);
    image_probe p = {};
    assert_int_equal(image_probe_file(plain, &p, &e), 0);
    assert_int_equal(image_check_self_contained(plain, &p, true, &e), 0);
    image_probe_clear(&p);
    cleanup_free char *opt = str_printf("data_file=%s", dfd);
    assert_int_equal(
        run(NULL, "qemu-img", "create", "-q", "-f", "qcow2", "-o", opt, df, "1M", NULL), 0);
    check_unsafe(df, "data_file", dfd, false);
    assert_int_equal(
        run(NULL, "qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", secret, par, NULL), 0);
    assert_int_equal(
        run(NULL, "qemu-img", "create", "-q", "-f", "vmdk", "-F", "vmdk", "-b", par, child, NULL),
        0);
    check_unsafe(child, "backing_file", par, false);
    /* a monolithic sparse vmdk names only itself */
    assert_int_equal(image_probe_file(par, &p, &e), 0);
    assert_int_equal(image_check_self_contained(par, &p, true, &e), 0);
    image_probe_clear(&p);
}

int main(void)
{
    if (!mkdtemp(tmpdir))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect_qemu_img_formats),
        cmocka_unit_test(test_detect_iso_and_errors),
        cmocka_unit_test(test_overlay_passes_qemu_img_check),
        cmocka_unit_test(test_iso_read_back),
        cmocka_unit_test(test_cloudinit_seed),
        cmocka_unit_test(test_sha256),
        cmocka_unit_test(test_spec_image_fields),
        cmocka_unit_test(test_self_contained),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    (void)rm_rf(tmpdir);
    return r;
}
