/* SPDX-License-Identifier: MIT */
/* vmctl serve: the HTTP API (docs/api.md) on a unix socket and, with a token, on TCP. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "cli.h"
#include "render.h"
#include "serve-route.h"
#include "serve.h"

const char cmd_serve_help[] =
    "Usage: vmctl serve [--socket PATH] [--listen ADDR:PORT --token-file FILE] [--foreground]\n"
    "\n"
    "Serve the REST/JSON API of docs/api.md (OpenAPI at GET /v1/openapi.json): VMs, exec\n"
    "streamed as it happens, files, images, stats and an event stream. It listens on a unix\n"
    "socket (mode 0600) and, with --listen, on TCP too, where every request must carry\n"
    "`Authorization: Bearer TOKEN` with the token of --token-file. The store stays the one source\n"
    "of truth: the CLI and the server can be used side by side.\n"
    "\n"
    "Without --foreground it detaches (pid in $VMCTL_HOME/serve.pid, log in\n"
    "$VMCTL_HOME/serve.log) and prints where it listens; SIGTERM stops it.\n"
    "\n"
    "Options:\n"
    "      --socket PATH       the unix socket (default $VMCTL_HOME/serve.sock)\n"
    "      --listen ADDR:PORT  also listen on TCP (ADDR default 127.0.0.1; PORT 0 picks one)\n"
    "      --token-file FILE   the bearer token for TCP (required with --listen)\n"
    "      --foreground        stay in the foreground, log to stderr (for systemd)\n"
    "      --timeout S         drop a connection idle for S seconds (default 30)\n"
    "      --max-upload MiB    the largest file upload (default 4096)\n"
    "  -h, --help              show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl serve\n"
    "  curl --unix-socket ~/.local/share/vmctl/serve.sock http://x/v1/vms\n"
    "  vmctl serve --foreground --listen 127.0.0.1:8470 --token-file ~/.config/vmctl/token\n";

enum {
    OPT_SOCKET = 0x100,
    OPT_LISTEN,
    OPT_TOKEN_FILE,
    OPT_FOREGROUND,
    OPT_TIMEOUT,
    OPT_MAX_UPLOAD,
    OPT_LIST_ROUTES,
};

static const struct option options[] = {
    {"socket", required_argument, NULL, OPT_SOCKET},
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"token-file", required_argument, NULL, OPT_TOKEN_FILE},
    {"foreground", no_argument, NULL, OPT_FOREGROUND},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"max-upload", required_argument, NULL, OPT_MAX_UPLOAD},
    {"list-routes", no_argument, NULL, OPT_LIST_ROUTES}, /* hidden: for the route test */
    {},
};

static int fail(cli *c, vmctl_error_kind kind, int err, const char *help, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int fail(cli *c, vmctl_error_kind kind, int err, const char *help, const char *fmt, ...)
{
    vmctl_error *e = NULL;
    va_list ap;
    va_start(ap, fmt);
    vmctl_error_newv(&e, kind, err, fmt, ap);
    va_end(ap);
    if (e && help)
        vmctl_error_set_help(e, help);
    return render_error(c, e);
}

/* A unix socket at path, mode 0600; a stale one (nobody answers) is replaced. */
static int bind_unix(cli *c, const char *path, int *ret)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return fail(c, VMCTL_E_CONFIG_INVALID, ENAMETOOLONG,
                    "Use a shorter path with `vmctl serve --socket PATH`.",
                    "socket path '%s' is too long", path);
    strcpy(sa.sun_path, path);
    cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fail(c, VMCTL_E_IO, errno, NULL, "cannot create a unix socket");
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
        return fail(c, VMCTL_E_IO, EADDRINUSE,
                    "Stop the other server (its pid is in $VMCTL_HOME/serve.pid) or use "
                    "`vmctl serve --socket PATH`.",
                    "a server already answers on '%s'", path);
    close(fd);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fail(c, VMCTL_E_IO, errno, NULL, "cannot create a unix socket");
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path);
    mode_t old = umask(0177);
    int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (r < 0 || chmod(path, 0600) < 0 || listen(fd, 128) < 0)
        return fail(c, VMCTL_E_IO, errno, NULL, "cannot listen on '%s'", path);
    *ret = TAKE_FD(fd);
    return 0;
}

static int bind_tcp(cli *c, const char *spec, int *ret, char **ret_where)
{
    cleanup_free char *s = strdup(spec);
    if (!s)
        return fail(c, VMCTL_E_INTERNAL, ENOMEM, NULL, "out of memory");
    const char *host = "127.0.0.1";
    char *port_s = strrchr(s, ':');
    if (port_s) {
        *port_s++ = '\0';
        if (*s)
            host = s;
    } else {
        port_s = s;
    }
    unsigned port = 0;
    if (cli_parse_uint(c, "--listen", port_s, 0, &port) < 0 || port > 65535)
        return port > 65535 ? cli_invalid_value(c, "--listen", spec, "ADDR:PORT, PORT <= 65535")
                            : EXIT_ERROR;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return cli_invalid_value(c, "--listen", spec, "an IPv4 ADDR:PORT such as 127.0.0.1:8470");
    cleanup_close int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 128) < 0)
        return fail(c, VMCTL_E_IO, errno,
                    "Pick another port with `vmctl serve --listen ADDR:PORT`.",
                    "cannot listen on '%s'", spec);
    socklen_t len = sizeof(sa);
    getsockname(fd, (struct sockaddr *)&sa, &len);
    char addr[INET_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET, &sa.sin_addr, addr, sizeof(addr));
    *ret_where = cli_printf("http://%s:%u", addr, ntohs(sa.sin_port));
    *ret = TAKE_FD(fd);
    return 0;
}

static int read_token(cli *c, const char *path, char **ret)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    char buf[4097];
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
    if (n < 0)
        return fail(c, VMCTL_E_CONFIG_INVALID, errno,
                    "Write a token (e.g. `head -c 32 /dev/urandom | base64 > FILE`) and pass "
                    "`--token-file FILE`.",
                    "cannot read the token file '%s'", path);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    if (n < 16 || strlen(buf) != (size_t)n || strpbrk(buf, " \t\r\n"))
        return fail(c, VMCTL_E_CONFIG_INVALID, EINVAL,
                    "Write a token of at least 16 characters on one line (e.g. `head -c 32 "
                    "/dev/urandom | base64 > FILE`).",
                    "the token file '%s' holds no usable token (one line of at least 16 "
                    "characters, no spaces)",
                    path);
    *ret = strdup(buf);
    return *ret ? 0 : fail(c, VMCTL_E_INTERNAL, ENOMEM, NULL, "out of memory");
}

static int write_pidfile(const char *path)
{
    cleanup_free char *tmp = cli_printf("%s.tmp", path);
    if (!tmp)
        return -ENOMEM;
    cleanup_close int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
    if (cli_write_all(fd, buf, (size_t)n) < 0 || rename(tmp, path) < 0)
        return -errno;
    return 0;
}

/* Double fork: the parent waits for the grandchild's word (one byte) on a pipe and exits. In
 * the grandchild: returns 0 and *ret_fd is the pipe to write that byte on. */
static int daemonize(cli *c, const char *log_path, int *ret_fd)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return fail(c, VMCTL_E_IO, errno, NULL, "cannot create a pipe");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        return fail(c, VMCTL_E_IO, errno, NULL, "cannot fork");
    if (pid > 0) {
        close(p[1]);
        char b = 0;
        ssize_t n;
        do
            n = read(p[0], &b, 1);
        while (n < 0 && errno == EINTR);
        waitpid(pid, NULL, 0);
        close(p[0]);
        if (n != 1 || b != 'R') {
            fprintf(stderr, "Error: vmctl serve failed to start; see '%s'\n", log_path);
            exit(EXIT_ERROR);
        }
        return 1;
    }
    close(p[0]);
    setsid();
    pid = fork();
    if (pid < 0)
        _exit(EXIT_ERROR);
    if (pid > 0)
        _exit(EXIT_OK);
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (null >= 0)
        dup2(null, STDIN_FILENO);
    if (log >= 0) {
        dup2(log, STDOUT_FILENO);
        dup2(log, STDERR_FILENO);
    }
    if (null > STDERR_FILENO)
        close(null);
    if (log > STDERR_FILENO)
        close(log);
    if (chdir("/") < 0) {
        /* nothing: / always exists */
    }
    *ret_fd = p[1];
    return 0;
}

int cmd_serve(cli *c, int argc, char **argv)
{
    const char *socket_path = NULL, *listen_spec = NULL, *token_file = NULL;
    bool foreground = false;
    unsigned timeout = 30, max_upload = 4096;
    int o;
    while ((o = cli_getopt(c, argc, argv, "", options)) != -1) {
        switch (o) {
        case OPT_SOCKET:
            socket_path = optarg;
            break;
        case OPT_LISTEN:
            listen_spec = optarg;
            break;
        case OPT_TOKEN_FILE:
            token_file = optarg;
            break;
        case OPT_FOREGROUND:
            foreground = true;
            break;
        case OPT_TIMEOUT:
            if (cli_parse_uint(c, "--timeout", optarg, 1, &timeout) < 0)
                return EXIT_ERROR;
            break;
        case OPT_MAX_UPLOAD:
            if (cli_parse_mib(c, "--max-upload", optarg, &max_upload) < 0)
                return EXIT_ERROR;
            break;
        case OPT_LIST_ROUTES:
            for (size_t i = 0; serve_route_at(i); i++)
                printf("%s %s\n", serve_route_at(i)->method, serve_route_at(i)->path);
            return cli_finish_stdout(c, EXIT_OK);
        default:
            return c->exit_code;
        }
    }
    int r = cli_expect_args(c, 0, 0, "");
    if (r)
        return r;
    if (listen_spec && !token_file) {
        vmctl_error *e = NULL;
        vmctl_error_new(&e, VMCTL_E_CLI_USAGE, EINVAL,
                        "--listen needs --token-file: vmctl serve refuses TCP without a token");
        if (e)
            vmctl_error_set_help(e, "Write a token (e.g. `head -c 32 /dev/urandom | base64 > "
                                    "FILE`, mode 0600) and run `vmctl serve --listen ADDR:PORT "
                                    "--token-file FILE`.");
        return render_error(c, e);
    }
    if (token_file && !listen_spec)
        return cli_usage_error(c, "--token-file is for --listen (the unix socket needs none)");

    c->home_create = true;
    vmctl_ctx *ctx = cli_ctx(c);
    if (!ctx)
        return EXIT_ERROR;
    cleanup_free char *home = strdup(vmctl_ctx_get_home(ctx));
    cleanup_free char *def_sock = cli_printf("%s/serve.sock", home);
    cleanup_free char *pidfile = cli_printf("%s/serve.pid", home);
    cleanup_free char *log_path = cli_printf("%s/serve.log", home);
    if (!home || !def_sock || !pidfile || !log_path)
        return fail(c, VMCTL_E_INTERNAL, ENOMEM, NULL, "out of memory");
    if (!socket_path)
        socket_path = def_sock;

    cleanup_free char *token = NULL;
    if (token_file && read_token(c, token_file, &token) != 0)
        return EXIT_ERROR;
    cleanup_close int unix_fd = -1, tcp_fd = -1;
    cleanup_free char *tcp_where = NULL;
    if (bind_unix(c, socket_path, &unix_fd) != 0)
        return EXIT_ERROR;
    if (listen_spec && bind_tcp(c, listen_spec, &tcp_fd, &tcp_where) != 0) {
        unlink(socket_path);
        return EXIT_ERROR;
    }

    int ready_fd = -1;
    if (!foreground) {
        r = daemonize(c, log_path, &ready_fd);
        if (r != 0) {
            if (r == 1) {
                printf("listening on unix:%s\n", socket_path);
                if (tcp_where)
                    printf("listening on %s\n", tcp_where);
                return cli_finish_stdout(c, EXIT_OK);
            }
            return EXIT_ERROR;
        }
    }

    /* The signals that stop it, waited for with sigwait: blocked before the threads start. */
    signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    serve_opts so = {
        .home = home,
        .unix_fd = unix_fd,
        .tcp_fd = tcp_fd,
        .token = token,
        .timeout_sec = timeout,
        .max_upload = (uint64_t)max_upload << 20,
    };
    serve_server *srv = NULL;
    vmctl_error *e = NULL;
    if (serve_start(&so, &srv, &e) < 0) {
        unlink(socket_path);
        return render_error(c, e);
    }
    bool own_pidfile = false;
    if (!foreground) {
        own_pidfile = write_pidfile(pidfile) == 0;
        char b = 'R';
        if (write(ready_fd, &b, 1) < 0) {
            /* the parent went: serve anyway */
        }
        close(ready_fd);
    }
    fprintf(stderr, "vmctl serve: listening on unix:%s%s%s\n", socket_path,
            tcp_where ? " and " : "", tcp_where ? tcp_where : "");
    fflush(stderr);

    int sig = 0;
    while (sigwait(&set, &sig) != 0) {
    }
    fprintf(stderr, "vmctl serve: stopping (%s)\n", sigabbrev_np(sig) ? sigabbrev_np(sig) : "?");
    serve_stop(srv);
    unlink(socket_path);
    if (own_pidfile)
        unlink(pidfile);
    return EXIT_OK;
}
