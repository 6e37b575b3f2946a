/* SPDX-License-Identifier: MIT */
/* The SSH channel on libssh. See ssh.h.
 *
 * The TCP connection is ours (socket + non-blocking connect bounded by the deadline), handed to
 * libssh with SSH_OPTIONS_FD: that separates the steps "connect" and "handshake" in errors, and
 * keeps every wait bounded. libssh never reads ~/.ssh/config or ~/.ssh/known_hosts here: the
 * known_hosts file is the VM's own. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libssh/callbacks.h>
#include <libssh/libssh.h>
#include <libssh/sftp.h>

#include "dl.h"
#include "error.h"
#include "ssh.h"
#include "util/util.h"

/* libssh is loaded by the first sshc_keygen or sshc_connect (dl.h); every other entry point takes
 * a connection, which only exists once it is loaded. */
static DLSYM_PROTOTYPE(sftp_attributes_free);
static DLSYM_PROTOTYPE(sftp_chmod);
static DLSYM_PROTOTYPE(sftp_close);
static DLSYM_PROTOTYPE(sftp_free);
static DLSYM_PROTOTYPE(sftp_fstat);
static DLSYM_PROTOTYPE(sftp_get_error);
static DLSYM_PROTOTYPE(sftp_init);
static DLSYM_PROTOTYPE(sftp_new);
static DLSYM_PROTOTYPE(sftp_open);
static DLSYM_PROTOTYPE(sftp_read);
static DLSYM_PROTOTYPE(sftp_write);
static DLSYM_PROTOTYPE(ssh_channel_close);
static DLSYM_PROTOTYPE(ssh_channel_free);
static DLSYM_PROTOTYPE(ssh_channel_get_exit_status);
static DLSYM_PROTOTYPE(ssh_channel_is_closed);
static DLSYM_PROTOTYPE(ssh_channel_is_eof);
static DLSYM_PROTOTYPE(ssh_channel_new);
static DLSYM_PROTOTYPE(ssh_channel_open_session);
static DLSYM_PROTOTYPE(ssh_channel_read_nonblocking);
static DLSYM_PROTOTYPE(ssh_channel_request_exec);
static DLSYM_PROTOTYPE(ssh_channel_request_send_signal);
static DLSYM_PROTOTYPE(ssh_set_channel_callbacks);
static DLSYM_PROTOTYPE(ssh_channel_send_eof);
static DLSYM_PROTOTYPE(ssh_channel_write);
static DLSYM_PROTOTYPE(ssh_clean_pubkey_hash);
static DLSYM_PROTOTYPE(ssh_connect);
static DLSYM_PROTOTYPE(ssh_disconnect);
static DLSYM_PROTOTYPE(ssh_free);
static DLSYM_PROTOTYPE(ssh_get_error);
static DLSYM_PROTOTYPE(ssh_get_fd);
static DLSYM_PROTOTYPE(ssh_get_fingerprint_hash);
static DLSYM_PROTOTYPE(ssh_get_publickey_hash);
static DLSYM_PROTOTYPE(ssh_get_server_publickey);
static DLSYM_PROTOTYPE(ssh_key_free);
static DLSYM_PROTOTYPE(ssh_new);
static DLSYM_PROTOTYPE(ssh_options_set);
static DLSYM_PROTOTYPE(ssh_pki_generate);
static DLSYM_PROTOTYPE(ssh_pki_export_pubkey_base64);
static DLSYM_PROTOTYPE(ssh_pki_export_privkey_base64);
static DLSYM_PROTOTYPE(ssh_pki_import_privkey_file);
static DLSYM_PROTOTYPE(ssh_session_is_known_server);
static DLSYM_PROTOTYPE(ssh_session_update_known_hosts);
static DLSYM_PROTOTYPE(ssh_string_free_char);
static DLSYM_PROTOTYPE(ssh_userauth_publickey);
static const dl_symbol ssh_symbols[] = {
    DL_SYMBOL(sftp_attributes_free),
    DL_SYMBOL(sftp_chmod),
    DL_SYMBOL(sftp_close),
    DL_SYMBOL(sftp_free),
    DL_SYMBOL(sftp_fstat),
    DL_SYMBOL(sftp_get_error),
    DL_SYMBOL(sftp_init),
    DL_SYMBOL(sftp_new),
    DL_SYMBOL(sftp_open),
    DL_SYMBOL(sftp_read),
    DL_SYMBOL(sftp_write),
    DL_SYMBOL(ssh_channel_close),
    DL_SYMBOL(ssh_channel_free),
    DL_SYMBOL(ssh_channel_get_exit_status),
    DL_SYMBOL(ssh_channel_is_closed),
    DL_SYMBOL(ssh_channel_is_eof),
    DL_SYMBOL(ssh_channel_new),
    DL_SYMBOL(ssh_channel_open_session),
    DL_SYMBOL(ssh_channel_read_nonblocking),
    DL_SYMBOL(ssh_channel_request_exec),
    DL_SYMBOL(ssh_channel_request_send_signal),
    DL_SYMBOL(ssh_set_channel_callbacks),
    DL_SYMBOL(ssh_channel_send_eof),
    DL_SYMBOL(ssh_channel_write),
    DL_SYMBOL(ssh_clean_pubkey_hash),
    DL_SYMBOL(ssh_connect),
    DL_SYMBOL(ssh_disconnect),
    DL_SYMBOL(ssh_free),
    DL_SYMBOL(ssh_get_error),
    DL_SYMBOL(ssh_get_fd),
    DL_SYMBOL(ssh_get_fingerprint_hash),
    DL_SYMBOL(ssh_get_publickey_hash),
    DL_SYMBOL(ssh_get_server_publickey),
    DL_SYMBOL(ssh_key_free),
    DL_SYMBOL(ssh_new),
    DL_SYMBOL(ssh_options_set),
    DL_SYMBOL(ssh_pki_generate),
    DL_SYMBOL(ssh_pki_export_pubkey_base64),
    DL_SYMBOL(ssh_pki_export_privkey_base64),
    DL_SYMBOL(ssh_pki_import_privkey_file),
    DL_SYMBOL(ssh_session_is_known_server),
    DL_SYMBOL(ssh_session_update_known_hosts),
    DL_SYMBOL(ssh_string_free_char),
    DL_SYMBOL(ssh_userauth_publickey),
};
dl_library dl_lib_ssh = DL_LIBRARY("libssh.so.4", "libssh-4", "the SSH channel", ssh_symbols);

#define SSHC_STEP_TIMEOUT_SEC 10 /* bound for one libssh blocking call */
#define SSHC_BACKOFF_MIN_USEC 50000
#define SSHC_BACKOFF_MAX_USEC 1000000
#define SSHC_IO_CHUNK         65536

struct sshc_conn {
    ssh_session session;
    sshc_target t;
};

static int ssh_failed(vmctl_error **reterr, const sshc_target *t, const char *step, int errnum,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int ssh_failed(vmctl_error **reterr, const sshc_target *t, const char *step, int errnum,
                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cleanup_free char *msg = str_vprintf(fmt, ap);
    va_end(ap);
    int r = err_make(reterr, VMCTL_E_SSH_FAILED, errnum, "ssh %s failed%s%s%s: %s", step,
                     t && t->vm ? " for vm '" : "", t && t->vm ? t->vm : "", t && t->vm ? "'" : "",
                     msg ? msg : "out of memory");
    err_detail(reterr, "step", "%s", step);
    if (t && t->vm)
        err_detail(reterr, "vm", "%s", t->vm);
    if (t && t->host)
        err_detail(reterr, "address", "%s:%u", t->host, t->port);
    return r;
}

/* ---------- keys ---------- */

int sshc_keygen(const char *dir, const char *comment, vmctl_error **reterr)
{
    cleanup_free char *priv_path = str_printf("%s/" SSHC_KEY_FILE, dir);
    cleanup_free char *pub_path = str_printf("%s/" SSHC_PUBKEY_FILE, dir);
    if (!priv_path || !pub_path)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    int r = dl_open(&dl_lib_ssh, reterr);
    if (r < 0)
        return err_prefix(reterr, r, "while generating the SSH key pair in '%s'", dir);
    ssh_key key = NULL;
    char *priv = NULL, *pub = NULL;
    if (sym_ssh_pki_generate(SSH_KEYTYPE_ED25519, 0, &key) != SSH_OK) {
        r = err_make(reterr, VMCTL_E_SSH_KEYGEN_FAILED, EIO,
                     "cannot generate an Ed25519 key pair for '%s'", dir);
        goto out;
    }
    if (sym_ssh_pki_export_privkey_base64(key, NULL, NULL, NULL, &priv) != SSH_OK ||
        sym_ssh_pki_export_pubkey_base64(key, &pub) != SSH_OK) {
        r = err_make(reterr, VMCTL_E_SSH_KEYGEN_FAILED, EIO, "cannot encode the key pair for '%s'",
                     dir);
        goto out;
    }
    /* The private key is created 0600 with O_EXCL: never readable by others, never replaced. */
    {
        cleanup_close int fd =
            open(priv_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        size_t len = strlen(priv);
        if (fd < 0 || write(fd, priv, len) != (ssize_t)len || fsync(fd) < 0) {
            r = err_make(reterr, VMCTL_E_SSH_KEYGEN_FAILED, errno ? errno : EIO,
                         "cannot write the private key '%s'", priv_path);
            err_detail(reterr, "path", "%s", priv_path);
            goto out;
        }
    }
    {
        cleanup_free char *line =
            str_printf("ssh-ed25519 %s vmctl@%s\n", pub, comment ? comment : "vm");
        int k = line ? write_file_atomic(pub_path, line, strlen(line), 0644) : -ENOMEM;
        if (k < 0) {
            (void)unlink(priv_path);
            r = err_make(reterr, VMCTL_E_SSH_KEYGEN_FAILED, -k, "cannot write the public key '%s'",
                         pub_path);
            err_detail(reterr, "path", "%s", pub_path);
            goto out;
        }
    }
out:
    if (r < 0)
        err_help(reterr, "Check that the VM directory '%s' is writable and the disk not full.",
                 dir);
    if (priv) {
        explicit_bzero(priv, strlen(priv));
        sym_ssh_string_free_char(priv);
    }
    sym_ssh_string_free_char(pub);
    sym_ssh_key_free(key);
    return r;
}

/* ---------- connect ---------- */

static int remaining_ms(uint64_t deadline)
{
    uint64_t now = now_usec();
    if (now >= deadline)
        return 0;
    uint64_t ms = (deadline - now + 999) / 1000;
    return ms > 600000 ? 600000 : (int)ms;
}

/* TCP connect bounded by deadline: fd, or -errno. */
static int tcp_connect(const char *host, uint16_t port, uint64_t deadline)
{
    struct sockaddr_storage ss = {};
    socklen_t len;
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        len = sizeof(*sin);
    } else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        len = sizeof(*sin6);
    } else
        return -EINVAL;
    cleanup_close int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&ss, len) < 0) {
        if (errno != EINPROGRESS)
            return -errno;
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int n = poll(&p, 1, remaining_ms(deadline));
        if (n < 0)
            return -errno;
        if (n == 0)
            return -ETIMEDOUT;
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
            return -errno;
        if (soerr)
            return -soerr;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
        return -errno;
    return TAKE_FD(fd);
}

static char *hostkey_fingerprint(ssh_session s)
{
    ssh_key key = NULL;
    if (sym_ssh_get_server_publickey(s, &key) != SSH_OK)
        return NULL;
    unsigned char *hash = NULL;
    size_t hlen = 0;
    char *out = NULL;
    if (sym_ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &hlen) == SSH_OK) {
        char *fp = sym_ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hlen);
        if (fp)
            out = strdup(fp);
        sym_ssh_string_free_char(fp);
        sym_ssh_clean_pubkey_hash(&hash);
    }
    sym_ssh_key_free(key);
    return out;
}

/* Compare the server's key with the pinned one; pin it when the file has none for this host. */
static int check_hostkey(ssh_session s, const sshc_target *t, vmctl_error **reterr)
{
    enum ssh_known_hosts_e k = sym_ssh_session_is_known_server(s);
    switch (k) {
    case SSH_KNOWN_HOSTS_OK:
        return 0;
    case SSH_KNOWN_HOSTS_UNKNOWN:
    case SSH_KNOWN_HOSTS_NOT_FOUND:
        /* first contact: pin it */
        if (sym_ssh_session_update_known_hosts(s) != SSH_OK)
            return ssh_failed(reterr, t, "hostkey", EIO, "cannot record the host key in '%s': %s",
                              t->known_hosts, sym_ssh_get_error(s));
        return 0;
    case SSH_KNOWN_HOSTS_CHANGED:
    case SSH_KNOWN_HOSTS_OTHER: {
        cleanup_free char *fp = hostkey_fingerprint(s);
        int r = ssh_failed(reterr, t, "hostkey", EPERM,
                           "the server at %s:%u presented a host key (%s) that differs from the "
                           "one pinned in '%s'; refusing to connect",
                           t->host, t->port, fp ? fp : "unknown fingerprint", t->known_hosts);
        err_detail(reterr, "known_hosts", "%s", t->known_hosts);
        err_help(reterr,
                 "Someone may be intercepting the connection, or the guest's SSH host key was "
                 "regenerated. If you know it was regenerated, delete '%s' and connect again.",
                 t->known_hosts);
        return r;
    }
    case SSH_KNOWN_HOSTS_ERROR:
    default:
        return ssh_failed(reterr, t, "hostkey", EIO, "cannot check the host key against '%s': %s",
                          t->known_hosts, sym_ssh_get_error(s));
    }
}

/* One attempt. Returns 0, or -EAGAIN with *step and *why set for a retryable failure, or a fatal
 * error (reterr filled). */
static int try_connect(const sshc_target *t, ssh_key priv, uint64_t deadline, ssh_session *ret,
                       const char **step, char **why, vmctl_error **reterr)
{
    int fd = tcp_connect(t->host, t->port, deadline);
    if (fd < 0) {
        *step = "connect";
        *why = str_printf("%s", strerror(-fd));
        return -EAGAIN;
    }
    ssh_session s = sym_ssh_new();
    if (!s) {
        close(fd);
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    }
    long timeout = remaining_ms(deadline) / 1000 + 1;
    if (timeout > SSHC_STEP_TIMEOUT_SEC)
        timeout = SSHC_STEP_TIMEOUT_SEC;
    int no = 0;
    socket_t sfd = fd;
    unsigned port = t->port;
    if (sym_ssh_options_set(s, SSH_OPTIONS_HOST, t->host) < 0 ||
        sym_ssh_options_set(s, SSH_OPTIONS_PORT, &port) < 0 ||
        sym_ssh_options_set(s, SSH_OPTIONS_USER, t->user) < 0 ||
        sym_ssh_options_set(s, SSH_OPTIONS_KNOWNHOSTS, t->known_hosts) < 0 ||
        sym_ssh_options_set(s, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, "/dev/null") < 0 ||
        sym_ssh_options_set(s, SSH_OPTIONS_PROCESS_CONFIG, &no) < 0 ||
        sym_ssh_options_set(s, SSH_OPTIONS_TIMEOUT, &timeout) < 0 ||
        sym_ssh_options_set(s, SSH_OPTIONS_FD, &sfd) < 0) {
        int r = ssh_failed(reterr, t, "connect", EINVAL, "cannot set session options: %s",
                           sym_ssh_get_error(s));
        sym_ssh_free(s);
        close(fd);
        return r;
    }
    /* from here the session owns fd (ssh_free/ssh_disconnect closes it) */
    if (sym_ssh_connect(s) != SSH_OK) {
        *step = "handshake";
        *why = strdup(sym_ssh_get_error(s));
        sym_ssh_free(s);
        return -EAGAIN;
    }
    int r = check_hostkey(s, t, reterr);
    if (r < 0) {
        sym_ssh_disconnect(s);
        sym_ssh_free(s);
        return r;
    }
    int a = sym_ssh_userauth_publickey(s, NULL, priv);
    if (a != SSH_AUTH_SUCCESS) {
        *step = "auth";
        *why = a == SSH_AUTH_DENIED
                   ? str_printf("the server refused the key for user '%s'", t->user)
                   : strdup(sym_ssh_get_error(s));
        sym_ssh_disconnect(s);
        sym_ssh_free(s);
        return -EAGAIN;
    }
    *ret = s;
    return 0;
}

int sshc_connect(const sshc_target *t, uint64_t deadline, sshc_conn **ret, vmctl_error **reterr)
{
    if (!t || !t->host || !t->user || !t->key_path || !t->known_hosts || !ret)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "sshc_connect: invalid argument");
    int r = dl_open(&dl_lib_ssh, reterr);
    if (r < 0) {
        if (t->vm)
            err_detail(reterr, "vm", "%s", t->vm);
        return err_prefix(reterr, r, "while connecting over SSH to %s:%u", t->host, t->port);
    }
    ssh_key priv = NULL;
    if (sym_ssh_pki_import_privkey_file(t->key_path, NULL, NULL, NULL, &priv) != SSH_OK) {
        r = ssh_failed(reterr, t, "auth", EACCES, "cannot read the private key '%s'", t->key_path);
        err_detail(reterr, "path", "%s", t->key_path);
        return r;
    }
    uint64_t start = now_usec();
    uint64_t backoff = SSHC_BACKOFF_MIN_USEC;
    unsigned attempts = 0;
    for (;;) {
        const char *step = NULL;
        cleanup_free char *why = NULL;
        ssh_session s = NULL;
        attempts++;
        r = try_connect(t, priv, deadline, &s, &step, &why, reterr);
        if (r == 0) {
            sshc_conn *c = calloc(1, sizeof(*c));
            if (!c) {
                sym_ssh_disconnect(s);
                sym_ssh_free(s);
                r = err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
                break;
            }
            c->session = s;
            c->t = *t;
            *ret = c;
            break;
        }
        if (r != -EAGAIN)
            break;
        uint64_t now = now_usec();
        if (now >= deadline) {
            double secs = (double)(now - start) / 1e6;
            if (streq(step, "auth")) {
                r = ssh_failed(reterr, t, "auth", EACCES, "%s", why ? why : "refused");
                err_note(reterr, "retried %u times for %.1f s", attempts, secs);
                err_help(reterr,
                         "Check that the guest authorizes the VM's key '%s.pub' for user "
                         "'%s' (cloud-init), or that --ssh-key was not used instead.",
                         t->key_path, t->user);
            } else {
                r = err_timeout(reterr, "ssh", secs,
                                "no SSH server answered at %s:%u within %.1f s", t->host, t->port,
                                secs);
                if (t->vm)
                    err_detail(reterr, "vm", "%s", t->vm);
                err_detail(reterr, "step", "%s", step);
                err_note(reterr, "last attempt (%u in all): %s failed: %s", attempts, step,
                         why ? why : "unknown error");
                err_help(reterr, "Check that sshd runs in the guest and that the guest has "
                                 "booted (`vmctl logs NAME`).");
            }
            break;
        }
        uint64_t left = deadline - now;
        sleep_usec(backoff < left ? backoff : left);
        backoff = backoff * 2 > SSHC_BACKOFF_MAX_USEC ? SSHC_BACKOFF_MAX_USEC : backoff * 2;
    }
    sym_ssh_key_free(priv);
    return r;
}

void sshc_close(sshc_conn *c)
{
    if (!c)
        return;
    if (c->session) {
        sym_ssh_disconnect(c->session);
        sym_ssh_free(c->session);
    }
    free(c);
}

/* ---------- exec ---------- */

static int deliver(const vmctl_exec_io *io, bool is_err, const void *buf, size_t n)
{
    if (!io)
        return 0;
    int (*fn)(const void *, size_t, void *) = is_err ? io->on_stderr : io->on_stdout;
    return fn ? fn(buf, n, io->userdata) : 0;
}

/* The server's exit-signal message: "TERM", "KILL", ... (RFC 4254 6.10) as a signal number. */
static void on_exit_signal(ssh_session session, ssh_channel channel, const char *signal, int core,
                           const char *errmsg, const char *lang, void *userdata)
{
    (void)session, (void)channel, (void)core, (void)errmsg, (void)lang;
    int *sig = userdata;
    for (int k = 1; k < 32 && signal; k++) {
        const char *abbrev = sigabbrev_np(k);
        if (abbrev && streq(abbrev, signal)) {
            *sig = k;
            return;
        }
    }
}

/* A signal for the command, from io's signal fd: sent as a "signal" channel request. */
static void forward_signal(ssh_channel ch, const vmctl_exec_io *io)
{
    int sig = io->on_signal(io->signal_fd, io->userdata);
    const char *name = sig > 0 ? sigabbrev_np(sig) : NULL;
    if (name)
        (void)sym_ssh_channel_request_send_signal(ch, name);
}

int sshc_exec(sshc_conn *c, const char *command, const void *stdin_data, size_t stdin_len,
              const vmctl_exec_io *io, uint64_t deadline, vmctl_exec_status *status,
              vmctl_error **reterr)
{
    const sshc_target *t = &c->t;
    ssh_channel ch = sym_ssh_channel_new(c->session);
    if (!ch)
        return ssh_failed(reterr, t, "channel", ENOMEM, "cannot create a channel: %s",
                          sym_ssh_get_error(c->session));
    int r = 0, exit_signal = 0;
    struct ssh_channel_callbacks_struct cb = {.userdata = &exit_signal,
                                              .channel_exit_signal_function = on_exit_signal};
    ssh_callbacks_init(&cb);
    (void)sym_ssh_set_channel_callbacks(ch, &cb);
    if (sym_ssh_channel_open_session(ch) != SSH_OK) {
        r = ssh_failed(reterr, t, "channel", EIO, "cannot open a session channel: %s",
                       sym_ssh_get_error(c->session));
        goto out;
    }
    if (sym_ssh_channel_request_exec(ch, command) != SSH_OK) {
        r = ssh_failed(reterr, t, "exec", EIO, "the server refused to run the command: %s",
                       sym_ssh_get_error(c->session));
        goto out;
    }
    if (io && io->on_started)
        io->on_started(io->userdata);
    const char *in = stdin_data;
    while (stdin_len > 0) {
        int n =
            sym_ssh_channel_write(ch, in, stdin_len > SSHC_IO_CHUNK ? SSHC_IO_CHUNK : stdin_len);
        if (n < 0) {
            r = ssh_failed(reterr, t, "exec", EIO, "cannot send the command's input: %s",
                           sym_ssh_get_error(c->session));
            goto out;
        }
        in += n;
        stdin_len -= (size_t)n;
    }
    (void)sym_ssh_channel_send_eof(ch);

    char *buf = malloc(SSHC_IO_CHUNK);
    if (!buf) {
        r = err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
        goto out;
    }
    for (;;) {
        bool got = false;
        for (int is_err = 0; is_err <= 1; is_err++) {
            int n = sym_ssh_channel_read_nonblocking(ch, buf, SSHC_IO_CHUNK, is_err);
            if (n == SSH_ERROR) {
                r = ssh_failed(reterr, t, "exec", EIO, "lost the connection: %s",
                               sym_ssh_get_error(c->session));
                break;
            }
            if (n > 0) {
                got = true;
                int k = deliver(io, is_err, buf, (size_t)n);
                if (k < 0) {
                    r = k;
                    break;
                }
            }
        }
        if (r < 0)
            break;
        if (got)
            continue;
        if (sym_ssh_channel_is_eof(ch) || sym_ssh_channel_is_closed(ch))
            break;
        int ms = remaining_ms(deadline);
        if (ms == 0) {
            r = err_timeout(reterr, "ssh", 0, "the command did not finish before the deadline");
            if (t->vm)
                err_detail(reterr, "vm", "%s", t->vm);
            break;
        }
        struct pollfd p[2] = {{.fd = sym_ssh_get_fd(c->session), .events = POLLIN},
                              {.fd = io && io->on_signal ? io->signal_fd : -1, .events = POLLIN}};
        if (poll(p, 2, ms > 100 ? 100 : ms) < 0 && errno != EINTR) {
            r = ssh_failed(reterr, t, "exec", errno, "poll failed");
            break;
        }
        if (p[1].revents & POLLIN)
            forward_signal(ch, io);
    }
    free(buf);
    if (r < 0)
        goto out;
    int code = sym_ssh_channel_get_exit_status(ch);
    if (status) {
        /* a command killed by a signal has no exit status, but an exit-signal message */
        status->exit_code = exit_signal ? 128 + exit_signal : code >= 0 ? code : 255;
        status->signal = exit_signal;
    }
out:
    sym_ssh_channel_close(ch);
    sym_ssh_channel_free(ch);
    return r;
}

/* ---------- SFTP ---------- */

static int sftp_fail(sshc_conn *c, sftp_session sf, vmctl_error **reterr, const char *what,
                     const char *path)
{
    int code = sf ? sym_sftp_get_error(sf) : -1;
    int r = ssh_failed(reterr, &c->t, "sftp", EIO, "%s '%s': %s (sftp error %d)", what, path,
                       sym_ssh_get_error(c->session), code);
    err_detail(reterr, "path", "%s", path);
    return r;
}

static int sftp_open_session(sshc_conn *c, sftp_session *ret, vmctl_error **reterr)
{
    sftp_session sf = sym_sftp_new(c->session);
    if (!sf)
        return ssh_failed(reterr, &c->t, "sftp", EIO, "cannot open an SFTP channel: %s",
                          sym_ssh_get_error(c->session));
    if (sym_sftp_init(sf) != SSH_OK) {
        int r = ssh_failed(reterr, &c->t, "sftp", EIO,
                           "the server has no SFTP subsystem or refused it: %s",
                           sym_ssh_get_error(c->session));
        sym_sftp_free(sf);
        return r;
    }
    *ret = sf;
    return 0;
}

int sshc_upload(sshc_conn *c, const char *local, const char *remote, vmctl_error **reterr)
{
    cleanup_close int fd = open(local, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        int r = err_make(reterr, VMCTL_E_IO, errno, "cannot open '%s'", local);
        err_detail(reterr, "path", "%s", local);
        return r;
    }
    sftp_session sf = NULL;
    int r = sftp_open_session(c, &sf, reterr);
    if (r < 0)
        return r;
    sftp_file f = sym_sftp_open(sf, remote, O_WRONLY | O_CREAT | O_TRUNC, st.st_mode & 07777);
    if (!f) {
        r = sftp_fail(c, sf, reterr, "cannot create", remote);
        goto out;
    }
    char *buf = malloc(SSHC_IO_CHUNK);
    if (!buf) {
        r = err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
        sym_sftp_close(f);
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, buf, SSHC_IO_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = err_make(reterr, VMCTL_E_IO, errno, "cannot read '%s'", local);
            break;
        }
        if (n == 0)
            break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = sym_sftp_write(f, buf + off, (size_t)(n - off));
            if (w <= 0) {
                r = sftp_fail(c, sf, reterr, "cannot write", remote);
                break;
            }
            off += w;
        }
        if (r < 0)
            break;
    }
    free(buf);
    if (sym_sftp_close(f) != SSH_OK && r >= 0)
        r = sftp_fail(c, sf, reterr, "cannot close", remote);
    if (r >= 0 && sym_sftp_chmod(sf, remote, st.st_mode & 07777) < 0)
        r = sftp_fail(c, sf, reterr, "cannot set the mode of", remote);
out:
    sym_sftp_free(sf);
    return r;
}

int sshc_download(sshc_conn *c, const char *remote, const char *local, vmctl_error **reterr)
{
    sftp_session sf = NULL;
    int r = sftp_open_session(c, &sf, reterr);
    if (r < 0)
        return r;
    cleanup_free char *tmp = str_printf("%s.vmctl-tmp.%d", local, (int)getpid());
    cleanup_close int fd = -1;
    char *buf = NULL;
    sftp_attributes attr = NULL;
    sftp_file f = sym_sftp_open(sf, remote, O_RDONLY, 0);
    if (!f) {
        r = sftp_fail(c, sf, reterr, "cannot open", remote);
        goto out;
    }
    attr = sym_sftp_fstat(f);
    mode_t mode = attr && (attr->flags & SSH_FILEXFER_ATTR_PERMISSIONS)
                      ? (mode_t)(attr->permissions & 07777)
                      : 0644;
    if (!tmp || (fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)) < 0) {
        r = err_make(reterr, VMCTL_E_IO, errno ? errno : ENOMEM, "cannot create '%s'",
                     tmp ? tmp : local);
        err_detail(reterr, "path", "%s", local);
        goto out;
    }
    buf = malloc(SSHC_IO_CHUNK);
    if (!buf) {
        r = err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
        goto out;
    }
    for (;;) {
        ssize_t n = sym_sftp_read(f, buf, SSHC_IO_CHUNK);
        if (n < 0) {
            r = sftp_fail(c, sf, reterr, "cannot read", remote);
            break;
        }
        if (n == 0)
            break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(fd, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                r = err_make(reterr, VMCTL_E_IO, errno, "cannot write '%s'", local);
                break;
            }
            off += w;
        }
        if (r < 0)
            break;
    }
    if (r >= 0 && (fchmod(fd, mode) < 0 || fsync(fd) < 0 || rename(tmp, local) < 0))
        r = err_make(reterr, VMCTL_E_IO, errno, "cannot write '%s'", local);
out:
    if (r < 0 && tmp && fd >= 0)
        (void)unlink(tmp);
    free(buf);
    if (attr)
        sym_sftp_attributes_free(attr);
    if (f)
        sym_sftp_close(f);
    sym_sftp_free(sf);
    return r;
}

/* ---------- helpers ---------- */

char *sshc_quote_argv(char *const *argv)
{
    size_t len = 1;
    for (char *const *a = argv; a && *a; a++) {
        len += 3;
        for (const char *p = *a; *p; p++)
            len += *p == '\'' ? 4 : 1;
    }
    char *out = malloc(len);
    if (!out)
        return NULL;
    char *o = out;
    for (char *const *a = argv; a && *a; a++) {
        if (a != argv)
            *o++ = ' ';
        *o++ = '\'';
        for (const char *p = *a; *p; p++) {
            if (*p == '\'') {
                memcpy(o, "'\\''", 4);
                o += 4;
            } else
                *o++ = *p;
        }
        *o++ = '\'';
    }
    *o = 0;
    return out;
}
