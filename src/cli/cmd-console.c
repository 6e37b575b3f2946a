/* SPDX-License-Identifier: MIT */
/* vmctl console NAME: relay a terminal to the VM's serial console; Ctrl-] detaches. */
#include <fcntl.h>
#include <poll.h>
#include <termios.h>

#include "cli.h"
#include "render.h"

const char cmd_console_help[] =
    "Usage: vmctl console NAME\n"
    "\n"
    "Attach to a running VM's serial console. The terminal is put in raw mode (and restored on\n"
    "exit, also on SIGTERM or SIGHUP); every key goes to the guest. Press Ctrl-] to detach: the\n"
    "VM keeps running. Everything the guest writes to its console is also kept in its log\n"
    "(`vmctl logs NAME`).\n"
    "\n"
    "When stdin is not a terminal, bytes are relayed as they are (Ctrl-] is not special); after\n"
    "the end of stdin, output is relayed until the console has been quiet for one second.\n"
    "\n"
    "Options:\n"
    "  -h, --help    show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl console web\n"
    "  printf 'uname -a\\n' | vmctl console web\n";

#define DETACH_KEY 0x1d /* Ctrl-] */
#define QUIET_MS   1000

int cmd_console(cli *c, int argc, char **argv)
{
    int r;
    if (!cli_parse_no_options(c, argc, argv, 1, 1, "NAME", &r))
        return r;
    if (c->json)
        return cli_usage_error(c, "console is interactive and has no --json output");
    const char *name = c->args[0];

    vmctl_ctx *ctx = cli_ctx(c);
    if (!ctx)
        return EXIT_ERROR;

    cleanup_close int fd = -1;
    vmctl_error *e = NULL;
    if (vmctl_vm_console_open(ctx, name, &fd, &e) < 0)
        return render_error(c, e);

    bool tty = isatty(STDIN_FILENO);
    struct termios saved, raw;
    bool raw_on = false;
    if (tty && tcgetattr(STDIN_FILENO, &saved) == 0) {
        raw = saved;
        cfmakeraw(&raw);
        raw_on = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    }
    const char *nl = raw_on ? "\r\n" : "\n";
    fprintf(stderr, "Connected to %s's console; press Ctrl-] to detach%s", name, nl);
    fflush(stderr);

    cli_catch_signals(false);
    bool stdin_open = true;
    const char *why = NULL;
    int status = EXIT_OK;
    char buf[16384];

    for (;;) {
        struct pollfd p[2] = {
            {.fd = stdin_open ? STDIN_FILENO : -1, .events = POLLIN},
            {.fd = fd, .events = POLLIN},
        };
        int n = poll(p, 2, stdin_open ? -1 : QUIET_MS);
        if (cli_interrupted) {
            status = 128 + (int)cli_interrupted;
            why = "interrupted";
            break;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            why = "poll failed";
            status = EXIT_ERROR;
            break;
        }
        if (n == 0) /* stdin ended and the console is quiet */
            break;

        if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t k = read(fd, buf, sizeof(buf));
            if (k < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (k <= 0) {
                why = "the console closed (the VM stopped?)";
                break;
            }
            if (cli_write_all(STDOUT_FILENO, buf, (size_t)k) < 0) {
                why = "cannot write to stdout";
                status = EXIT_ERROR;
                break;
            }
        }
        if (stdin_open && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t k = read(STDIN_FILENO, buf, sizeof(buf));
            if (k < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (k <= 0) {
                if (tty)
                    break; /* the terminal went away */
                stdin_open = false;
                continue;
            }
            size_t len = (size_t)k;
            bool detach = false;
            if (tty) {
                char *d = memchr(buf, DETACH_KEY, len);
                if (d) {
                    len = (size_t)(d - buf);
                    detach = true;
                }
            }
            if (len && cli_write_all(fd, buf, len) < 0) {
                why = "the console closed (the VM stopped?)";
                break;
            }
            if (detach)
                break;
        }
    }

    if (raw_on)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    cli_restore_signals();
    if (why)
        fprintf(stderr, "\nDisconnected from %s's console: %s\n", name, why);
    else if (tty)
        fprintf(stderr, "\nDetached from %s's console\n", name);
    return status;
}
