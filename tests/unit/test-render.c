/* SPDX-License-Identifier: MIT */
/* The CLI's renderer on its own: text from elsewhere made safe for a terminal (escapes, invalid
 * UTF-8, ASCII off a UTF-8 locale), vmctl's own glyphs in ASCII, and the JSON error's errno and
 * cause. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "src/cli/render.h"

/* the library's (src/lib/error.h, whose cleanup macros the CLI's headers define as well) */
int err_prefix(vmctl_error **reterr, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* render.c's one need from cli.c */
char *cli_printf(const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

static void init_locale(const char *lc_all)
{
    cli c = {};
    setenv("LC_ALL", lc_all, 1);
    render_init(&c);
}

static void expect_sanitized(const char *in, const char *want)
{
    char *got = render_sanitize(in);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_sanitize_utf8(void **state)
{
    (void)state;
    init_locale("C.UTF-8");
    expect_sanitized("plain text", "plain text");
    expect_sanitized("two\nlines\tand a tab", "two\nlines\tand a tab");
    expect_sanitized("crlf\r\nline", "crlf\nline");
    expect_sanitized("title \033]0;pwned\007 colour \033[31mred",
                     "title \\e]0;pwned\\x07 colour \\e[31mred");
    expect_sanitized("cr\rback", "cr\\rback");
    expect_sanitized("del\x7f nul-less \x01", "del\\x7f nul-less \\x01");
    expect_sanitized("caf\xc3\xa9 \xe2\x9c\x93", "caf\xc3\xa9 \xe2\x9c\x93"); /* kept */
    expect_sanitized("c1 \xc2\x9b"
                     "31m",
                     "c1 \\u{009b}31m"); /* CSI */
    expect_sanitized("bidi \xe2\x80\xae"
                     "evil",
                     "bidi \\u{202e}evil");
    expect_sanitized("bad \xff\xc3 end", "bad \\xff\\xc3 end");
    expect_sanitized("overlong \xc0\xaf", "overlong \\xc0\\xaf");
    expect_sanitized("surrogate \xed\xa0\x80", "surrogate \\xed\\xa0\\x80");
    expect_sanitized("", "");
}

static void test_sanitize_ascii(void **state)
{
    (void)state;
    init_locale("C");
    expect_sanitized("caf\xc3\xa9", "caf\\xc3\\xa9");
    expect_sanitized("esc \033[2J", "esc \\e[2J");
    init_locale("C.UTF-8");
}

static void test_fputs_ascii(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t size = 0;
    init_locale("C");
    FILE *f = open_memstream(&buf, &size);
    render_fputs("ok (\u2713), failed (\u2717) \u2014 \u00d7 \u251c\u2500\u25b6 \u2603.", f);
    fclose(f);
    assert_string_equal(buf, "ok (ok), failed (x) - x |-> ?.");
    free(buf);
    init_locale("C.UTF-8");
    f = open_memstream(&buf, &size);
    render_fputs("\u2713", f);
    fclose(f);
    assert_string_equal(buf, "\u2713");
    free(buf);
}

static void test_error_json_cause(void **state)
{
    (void)state;
    vmctl_error *e = NULL;
    vmctl_error_new(&e, VMCTL_E_IO, EACCES, "cannot open '%s'", "/x");
    json_t *doc = render_error_json(e);
    json_t *err = json_object_get(doc, "error");
    assert_int_equal(json_integer_value(json_object_get(err, "errno")), EACCES);
    assert_string_equal(json_string_value(json_object_get(err, "cause")),
                        "Permission denied (EACCES)");
    assert_string_equal(json_string_value(json_object_get(err, "errno_name")), "EACCES");
    assert_string_equal(json_string_value(json_object_get(err, "code")), "vm_manager::io");
    json_decref(doc);
    vmctl_error_free(e);

    e = NULL; /* vmctl_error_new replaces (frees) what *reterr holds */
    vmctl_error_new(&e, VMCTL_E_CONFIG_INVALID, 0, "no errno");
    doc = render_error_json(e);
    err = json_object_get(doc, "error");
    assert_true(json_is_null(json_object_get(err, "errno")));
    assert_true(json_is_null(json_object_get(err, "cause")));
    assert_true(json_is_null(json_object_get(err, "errno_name")));
    json_decref(doc);
    vmctl_error_free(e);
}

/* render_error's text of e (stderr captured), caller frees */
static char *render_text(vmctl_error *e)
{
    fflush(stderr);
    char path[] = "/tmp/test-render.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    cli c = {};
    render_error(&c, e);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    char *buf = calloc(1, 4096);
    assert_true(pread(fd, buf, 4095, 0) > 0);
    close(fd);
    unlink(path);
    return buf;
}

/* The order of the text: message, context, notes, the cause once, help; a message that says its
 * cause already gets no caused-by line. */
static void test_error_text_cause(void **state)
{
    (void)state;
    init_locale("C.UTF-8");
    vmctl_error *e = NULL;
    vmctl_error_new(&e, VMCTL_E_IO, EACCES, "cannot open '%s'", "/x");
    vmctl_error_add_note(e, "a note");
    vmctl_error_set_help(e, "Do something.");
    err_prefix(&e, 0, "while doing %s", "b");
    err_prefix(&e, 0, "while doing %s", "a");
    char *text = render_text(e);
    assert_string_equal(text, "Error: vm_manager::io\n\n"
                              "  x cannot open '/x'\n"
                              "  |-> while doing a\n"
                              "  `-> while doing b\n"
                              "\n  note: a note\n"
                              "\n  caused by: Permission denied (EACCES)\n"
                              "\n  help: Do something.\n");
    free(text);

    e = NULL;
    vmctl_error_new(&e, VMCTL_E_IO, ENOENT, "cannot open '/x': no such file or directory");
    text = render_text(e);
    assert_null(strstr(text, "caused by"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sanitize_utf8),    cmocka_unit_test(test_sanitize_ascii),
        cmocka_unit_test(test_fputs_ascii),      cmocka_unit_test(test_error_json_cause),
        cmocka_unit_test(test_error_text_cause),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
