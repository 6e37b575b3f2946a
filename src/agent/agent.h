/* SPDX-License-Identifier: MIT */
/* vmctl-agent's internals, shared by agent.c (main loop and requests), agent-session.c (output
 * queue, sessions: ports and vsock), agent-jobs.c (jobs: commands), agent-files.c (file
 * transfers) and agent-meta.c (metadata and info). One process, one thread: the state is A. */
#pragma once

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/random.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <linux/vm_sockets.h>

#include "agent-proto.h"
#include "config.h"

#define DEFAULT_PATH       "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define OUT_HIGH_WATER     (512u * 1024u) /* stop reading a session's jobs' fds above this */
#define EXIT_GRACE_MS      100            /* wait this long for pipes held by background jobs */
#define RECHECK_MS         1000  /* re-poll a disconnected port this often (SIGIO backup) */
#define REOPEN_MS          5     /* retry opening a --port path this often */
#define SCAN_FIRST_MS      5     /* look for new ports this often at first ... */
#define SCAN_MAX_MS        1000  /* ... backing off to this while the guest boots ... */
#define SCAN_SLOW_MS       30000 /* ... and to this once SCAN_SETTLE_MS passed */
#define SCAN_SETTLE_MS     60000
#define SHUTDOWN_FLUSH_MS  2000
#define MAX_SESSION_JOBS   64 /* requests at once per session (protocol: a 65th is EBUSY) */
#define MAX_JOBS           128
#define MAX_PORTS          AGENT_SERIAL_PORTS /* virtio-serial ports org.vmctl.agent[.N] */
#define MAX_VSOCK_SESSIONS 16
#define MAX_SESSIONS       (MAX_PORTS + MAX_VSOCK_SESSIONS)
#define FILE_CHUNK         (256u * 1024u)            /* FILE_GET data frames */
#define ACK_EVERY          (64u * 1024u)             /* STDIN_ACK at least this often */
#define STDIN_QUEUE_MAX    (4u * AGENT_STDIN_WINDOW) /* a host ignoring the window is cut off */
#define META_DIR           "/run/vmctl"
/* A partial frame that gets no new byte for this long is dropped: its sender died, and a quick
 * reconnect hid the disconnect from us (QEMU's close and open reach the guest together). */
#define STALL_MS 500

enum job_kind { JOB_EXEC, JOB_PUT, JOB_GET };

struct job {
    bool used;
    enum job_kind kind;
    int sess; /* index in A.sess: where its frames go */
    uint32_t id;
    uint8_t version; /* frames about this job are sent in the version of its request */
    pid_t pid;       /* EXEC: the command (0 once reaped and reported) */
    int out_fd, err_fd, in_fd;
    uint8_t *inq; /* stdin bytes not yet written */
    size_t inq_len, inq_off, inq_cap;
    bool in_eof;          /* no more input is coming */
    bool stream;          /* stdin fed by STDIN frames (acknowledged) */
    int pty_fd;           /* AGENT_EXEC_TTY: the terminal's master (RESIZE), else -1 */
    size_t unacked;       /* stdin bytes taken but not acknowledged yet */
    uint64_t deadline_ms; /* 0: none */
    uint64_t exited_ms;   /* 0: still running */
    uint64_t activity_ms;
    int status;
    bool timed_out;
    /* FILE_PUT */
    char *path, *tmp_path;
    uint32_t mode;
    int64_t mtime_sec;
    uint32_t mtime_nsec;
    int put_errno;
};

enum sess_kind {
    SESS_VIRTIO, /* a virtio-serial port: stays open; a disconnect waits for SIGIO */
    SESS_PATH,   /* --port PATH (a device or a unix socket): closed and reopened */
    SESS_VSOCK,  /* an accepted AF_VSOCK connection: closed and forgotten on disconnect */
};

/* One host connection. The buffers are allocated when the session opens, never per frame. */
struct session {
    bool used;
    enum sess_kind kind;
    int fd;         /* -1: SESS_PATH waiting to reopen */
    bool connected; /* false after POLLHUP until SIGIO or the re-check */
    uint64_t recheck_ms;
    char *path;  /* SESS_VIRTIO/SESS_PATH: the device or socket */
    uint8_t *in; /* AGENT_MAX_FRAME bytes */
    size_t in_len;
    uint64_t in_last_ms; /* when the last byte arrived */
    uint8_t *out;
    size_t out_len, out_cap;
};

/* The agent's state (agent.c). */
struct agent_state {
    const char *port_path; /* --port: the only session, no sysfs scan, no vsock */
    int listen_fd;         /* AF_VSOCK listener, -1 when not listening */
    bool no_vsock;
    uint64_t scan_ms, scan_every; /* next look for ports (and /dev/vsock), and the interval */
    uint64_t started_ms;
    int sigfd;
    int sig_port; /* the real-time signal the virtio ports raise (F_SETSIG), 0: plain SIGIO */
    bool pid1;
    struct session sess[MAX_SESSIONS];
    struct job jobs[MAX_JOBS];
    int shutdown_action; /* -1: none pending */
    unsigned long garbage;
    uint32_t instance;     /* in PONG: lets a host notice that the agent restarted */
    bool metadata_applied; /* in PONG (AGENT_STATE_METADATA): the host need not push it again */
};

extern struct agent_state A;

#define SESS(j) (&A.sess[(j)->sess])

/* agent.c: log, time, fds */
void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
uint64_t now_ms(void);
void close_fd(int *fd);

/* agent-session.c: output queue, sessions */
uint8_t *out_reserve(struct session *s, size_t n);
void out_commit(struct session *s, uint8_t *p, int n, uint8_t version);
void send_error(struct session *s, uint32_t id, uint8_t version, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
void send_simple(struct session *s, uint32_t id, uint8_t version, uint8_t type);
void send_u32(struct session *s, uint32_t id, uint8_t version, uint8_t type, uint32_t v);
bool out_flush(struct session *s);
struct session *sess_new(enum sess_kind kind, const char *path);
int sess_count(enum sess_kind kind);
void sess_attach(struct session *s, int fd);
int open_path(const char *path);
void scan(uint64_t now);
void accept_vsock(void);
void host_disconnected(struct session *s);

/* agent-jobs.c: jobs (EXEC and the job table) */
struct job *job_find(struct session *s, uint32_t id);
struct job *job_new(struct session *s, uint32_t id, uint8_t version, enum job_kind kind);
void job_free(struct job *j);
void job_kill(struct job *j, int sig);
void jobs_abandon(int sess);
int running_jobs(void);
int inq_append(struct job *j, const uint8_t *data, size_t len);
void job_ack(struct job *j, bool force);
void exec_start(struct session *s, uint32_t id, uint8_t version, const agent_exec_req *req);
void job_read(struct job *j, int *fd, uint8_t type);
void job_write_stdin(struct job *j);
uint64_t job_grace_end(const struct job *j);
void job_maybe_finish(struct job *j, uint64_t now);
void reap_children(void);

/* agent-files.c: FILE_PUT, FILE_GET */
void put_start(struct session *s, uint32_t id, uint8_t version, const agent_file_put *fp);
void put_data(struct job *j, const uint8_t *data, size_t len);
void put_finish(struct job *j);
void get_start(struct session *s, uint32_t id, uint8_t version, const char *path);

/* agent-meta.c: metadata and info */
void metadata_apply(struct session *s, uint32_t id, uint8_t version, const agent_metadata *m);
void info_reply(struct session *s, uint32_t id, uint8_t version);
void identity_apply(struct session *s, uint32_t id, uint8_t version, const agent_identity *in);
