/* SPDX-License-Identifier: MIT */
/* vmctl-agent: jobs: the job table, EXEC (users, environment, vfork, pseudo-terminals, pipes),
 * stdin flow control, the EXIT of a finished job and reaping children. */
#include "agent.h"

/* --- jobs --- */

struct job *job_find(struct session *s, uint32_t id)
{
    int idx = (int)(s - A.sess);
    for (int i = 0; i < MAX_JOBS; i++)
        if (A.jobs[i].used && A.jobs[i].sess == idx && A.jobs[i].id == id)
            return &A.jobs[i];
    return NULL;
}

static int session_jobs(int idx)
{
    int n = 0;
    for (int i = 0; i < MAX_JOBS; i++)
        n += A.jobs[i].used && A.jobs[i].sess == idx;
    return n;
}

struct job *job_new(struct session *s, uint32_t id, uint8_t version, enum job_kind kind)
{
    int idx = (int)(s - A.sess);
    bool room = session_jobs(idx) < MAX_SESSION_JOBS;
    if (job_find(s, id)) {
        send_error(s, id, version, EEXIST, "request id %u is already in use", id);
        return NULL;
    }
    for (int i = 0; i < MAX_JOBS && room; i++) {
        struct job *j = &A.jobs[i];
        if (!j->used) {
            *j = (struct job){.used = true,
                              .kind = kind,
                              .sess = idx,
                              .id = id,
                              .version = version,
                              .out_fd = -1,
                              .err_fd = -1,
                              .in_fd = -1,
                              .pty_fd = -1};
            return j;
        }
    }
    send_error(s, id, version, EBUSY, "too many requests at once (at most %d)", MAX_SESSION_JOBS);
    return NULL;
}

void job_free(struct job *j)
{
    close_fd(&j->out_fd);
    close_fd(&j->err_fd);
    close_fd(&j->in_fd);
    close_fd(&j->pty_fd);
    free(j->inq);
    if (j->tmp_path)
        unlink(j->tmp_path);
    free(j->tmp_path);
    free(j->path);
    *j = (struct job){.out_fd = -1, .err_fd = -1, .in_fd = -1, .pty_fd = -1};
}

void job_kill(struct job *j, int sig)
{
    if (j->kind == JOB_EXEC && j->pid > 0 && !j->exited_ms) {
        kill(-j->pid, sig);
        kill(j->pid, sig);
    }
}

/* Kill the process group of every command of session sess (-1: of all sessions); zombies are
 * reaped by the SIGCHLD handler. */
void jobs_abandon(int sess)
{
    for (int i = 0; i < MAX_JOBS; i++) {
        struct job *j = &A.jobs[i];
        if (!j->used || (sess >= 0 && j->sess != sess))
            continue;
        if (j->kind == JOB_EXEC)
            logmsg("abandoned command (pid %d)", (int)j->pid);
        job_kill(j, SIGKILL);
        job_free(j);
    }
}

int running_jobs(void)
{
    int n = 0;
    for (int i = 0; i < MAX_JOBS; i++)
        n += A.jobs[i].used;
    return n;
}

int inq_append(struct job *j, const uint8_t *data, size_t len)
{
    if (!len)
        return 0;
    if (j->inq_off && j->inq_off == j->inq_len)
        j->inq_off = j->inq_len = 0;
    if (j->inq_cap - j->inq_len < len) {
        if (j->inq_off) {
            memmove(j->inq, j->inq + j->inq_off, j->inq_len - j->inq_off);
            j->inq_len -= j->inq_off;
            j->inq_off = 0;
        }
        size_t cap = j->inq_cap ? j->inq_cap : 64 * 1024;
        while (cap - j->inq_len < len)
            cap *= 2;
        if (cap != j->inq_cap) {
            uint8_t *p = realloc(j->inq, cap);
            if (!p)
                return -ENOMEM;
            j->inq = p;
            j->inq_cap = cap;
        }
    }
    memcpy(j->inq + j->inq_len, data, len);
    j->inq_len += len;
    return 0;
}

void job_ack(struct job *j, bool force)
{
    if (j->stream && j->unacked && (force || j->unacked >= ACK_EVERY)) {
        send_u32(SESS(j), j->id, j->version, AGENT_MSG_STDIN_ACK, (uint32_t)j->unacked);
        j->unacked = 0;
    }
}

/* Filled by a vfork()ed child that failed before or at exec (it shares our memory). */
struct exec_fail {
    int err;
    int stage; /* 1 chdir, 2 exec, 3 switching user, 4 terminal, 5 chroot */
};

/* EXEC with AGENT_EXEC_USER: who to become (resolved in the agent, applied in the child). */
#define RUN_AS_MAX_GROUPS 64
struct run_as {
    uid_t uid;
    gid_t gid;
    gid_t groups[RUN_AS_MAX_GROUPS];
    size_t n_groups;
    char name[64];
    char home[256];
    char env_home[8 + 256], env_user[8 + 64], env_logname[10 + 64];
};

/* Split a colon-separated line of /etc/passwd or /etc/group in place; returns the field count. */
static size_t split_fields(char *line, char **f, size_t max)
{
    size_t n = 0;
    line[strcspn(line, "\n")] = 0;
    while (n < max) {
        f[n++] = line;
        char *c = strchr(line, ':');
        if (!c)
            break;
        *c = 0;
        line = c + 1;
    }
    return n;
}

static bool parse_id(const char *s, unsigned long *v)
{
    char *end = NULL;
    if (!*s || *s < '0' || *s > '9')
        return false;
    errno = 0;
    *v = strtoul(s, &end, 10);
    return !errno && !*end && *v < 0xffffffffUL;
}

/* "NAME", "UID" or "UID:GID" against the guest's /etc/passwd and /etc/group (a static agent has
 * no NSS). A number needs no passwd entry; a name does. 0, or -errno with *why set. */
static int resolve_user(const char *spec, const char *root, struct run_as *u, const char **why)
{
    char pwpath[4096], grpath[4096];
    snprintf(pwpath, sizeof(pwpath), "%s/etc/passwd", root ? root : "");
    snprintf(grpath, sizeof(grpath), "%s/etc/group", root ? root : "");
    memset(u, 0, sizeof(*u));
    char idpart[32] = "";
    unsigned long uid = 0, gid = 0;
    bool by_id = false, have_gid = false;
    const char *colon = strchr(spec, ':');
    if (strlen(spec) < sizeof(idpart)) {
        memcpy(idpart, spec, strlen(spec) + 1);
        if (colon)
            idpart[colon - spec] = 0;
        by_id = parse_id(idpart, &uid);
        have_gid = by_id && colon && parse_id(colon + 1, &gid);
    }
    if ((colon && !have_gid) || (!by_id && strlen(spec) >= sizeof(u->name))) {
        *why = "expected NAME, UID or UID:GID";
        return -EINVAL;
    }
    bool found = false;
    FILE *pw = fopen(pwpath, "re");
    char *line = NULL;
    size_t cap = 0;
    while (pw && !found && getline(&line, &cap, pw) > 0) {
        char *f[7];
        unsigned long puid, pgid;
        if (split_fields(line, f, 7) < 7 || !parse_id(f[2], &puid) || !parse_id(f[3], &pgid))
            continue;
        if (by_id ? puid == uid : strcmp(f[0], spec) == 0) {
            found = true;
            uid = puid;
            if (!have_gid)
                gid = pgid;
            snprintf(u->name, sizeof(u->name), "%s", f[0]);
            snprintf(u->home, sizeof(u->home), "%s", f[5][0] ? f[5] : "/");
        }
    }
    if (pw)
        fclose(pw);
    if (!found && !by_id) {
        free(line);
        *why = "no such user in the guest's /etc/passwd";
        return -ENOENT;
    }
    if (!found) { /* a bare number: its own group, home / */
        if (!have_gid)
            gid = uid;
        snprintf(u->name, sizeof(u->name), "%lu", uid);
        snprintf(u->home, sizeof(u->home), "/");
    }
    u->uid = (uid_t)uid;
    u->gid = (gid_t)gid;
    u->groups[u->n_groups++] = u->gid;
    FILE *gr = found ? fopen(grpath, "re") : NULL;
    while (gr && getline(&line, &cap, gr) > 0 && u->n_groups < RUN_AS_MAX_GROUPS) {
        char *f[4];
        unsigned long g;
        if (split_fields(line, f, 4) < 4 || !parse_id(f[2], &g) || g == gid)
            continue;
        for (char *m = strtok(f[3], ","); m; m = strtok(NULL, ","))
            if (strcmp(m, u->name) == 0) {
                u->groups[u->n_groups++] = (gid_t)g;
                break;
            }
    }
    if (gr)
        fclose(gr);
    free(line);
    snprintf(u->env_home, sizeof(u->env_home), "HOME=%s", u->home);
    snprintf(u->env_user, sizeof(u->env_user), "USER=%s", u->name);
    snprintf(u->env_logname, sizeof(u->env_logname), "LOGNAME=%s", u->name);
    return 0;
}

static void __attribute__((noreturn))
child_run(char **argv, char **envp, const char *cwd, const char *root, int in, int out, int err,
          bool tty, const struct run_as *u, volatile struct exec_fail *f);

/* vfork in a frame of its own: nothing of the caller's is live across it, so the compiler need
 * not assume the child clobbered the caller's registers (-Wclobbered). */
static __attribute__((noinline)) pid_t spawn_child(char **argv, char **envp, const char *cwd,
                                                   const char *root, int in, int out, int err,
                                                   bool tty, const struct run_as *u,
                                                   volatile struct exec_fail *f)
{
    pid_t pid = vfork();
    if (pid == 0)
        child_run(argv, envp, cwd, root, in, out, err, tty, u, f);
    return pid;
}

/* environ with req's K=V entries replacing or added (a command's environment is the agent's plus
 * the request's). The strings are borrowed. */
static char **merge_env(char **add, size_t n_add)
{
    size_t n = 0;
    while (environ && environ[n])
        n++;
    char **e = calloc(n + n_add + 1, sizeof(char *));
    if (!e)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t klen = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        bool replaced = false;
        for (size_t a = 0; a < n_add && !replaced; a++)
            replaced = strncmp(add[a], environ[i], klen) == 0 && add[a][klen] == '=';
        if (!replaced)
            e[k++] = environ[i];
    }
    for (size_t a = 0; a < n_add; a++) {
        const char *eq = strchr(add[a], '=');
        bool dup = false; /* a later entry of the request wins, as with putenv */
        for (size_t b = a + 1; b < n_add && !dup; b++)
            dup = strncmp(add[a], add[b], (size_t)(eq - add[a]) + 1) == 0;
        if (!dup)
            e[k++] = add[a];
    }
    return e;
}

/* The child of vfork(): it runs on the agent's memory until execve, so it only makes system
 * calls and reports a failure through *f (never returns, never touches the heap). vfork rather
 * than fork: under TCG, copying the agent's page tables and taking the copy-on-write faults
 * afterwards was the largest part of an exec of `true`. */
static void __attribute__((noreturn))
child_run(char **argv, char **envp, const char *cwd, const char *root, int in, int out, int err,
          bool tty, const struct run_as *u, volatile struct exec_fail *f)
{
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_UNBLOCK, &all, NULL);
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigaction(SIGPIPE, &dfl, NULL); /* per process: not shared with the agent */
    setsid();
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) {
        f->err = errno;
        f->stage = 2;
        _exit(127);
    }
    /* a terminal: the new session's controlling terminal (job control, Ctrl-C as SIGINT) */
    if (tty && ioctl(0, TIOCSCTTY, 0) < 0) {
        f->err = errno;
        f->stage = 4;
        _exit(127);
    }
    if (root && (chroot(root) < 0 || chdir("/") < 0)) {
        f->err = errno;
        f->stage = 5;
        _exit(127);
    }
    /* raw system calls: they change this task only (glibc's wrappers would try to reach every
     * thread of the process, whose memory we share until exec) */
    if (u && (syscall(SYS_setgroups, u->n_groups, u->groups) < 0 ||
              syscall(SYS_setgid, u->gid) < 0 || syscall(SYS_setuid, u->uid) < 0)) {
        f->err = errno;
        f->stage = 3;
        _exit(127);
    }
    if (chdir(cwd) < 0) {
        f->err = errno;
        f->stage = 1;
        _exit(127);
    }
    execvpe(argv[0], argv, envp);
    f->err = errno;
    f->stage = 2;
    /* as a shell: 127 when there is no such command, 126 when it cannot be executed */
    _exit(errno == ENOENT ? 127 : 126);
}

#define DEVPTS_MAGIC 0x1cd1

/* A new pseudo-terminal of rows x cols (0: left as the kernel makes it): its master and its
 * slave (both O_CLOEXEC), or -errno. Mounts /dev/pts when nothing is there yet (the default
 * guest's /init mounts it in the background while the agent starts). */
static int pty_open(uint32_t rows, uint32_t cols, int *master, int *slave)
{
    struct statfs sf;
    if (statfs("/dev/pts", &sf) < 0 || sf.f_type != DEVPTS_MAGIC) {
        mkdir("/dev/pts", 0755);
        if (mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                  "mode=0620,ptmxmode=0666") < 0 &&
            errno != EBUSY)
            logmsg("cannot mount /dev/pts: %s", strerror(errno));
    }
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (m < 0)
        return -errno;
    if (unlockpt(m) < 0) {
        int e = errno;
        close(m);
        return -e;
    }
    /* the peer by fd (no path lookup), else by its name */
    int sl = ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (sl < 0) {
        char name[64];
        if (ptsname_r(m, name, sizeof(name)) != 0 ||
            (sl = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
            int e = errno;
            close(m);
            return -e;
        }
    }
    if (rows && cols) {
        struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
        ioctl(m, TIOCSWINSZ, &ws);
    }
    *master = m;
    *slave = sl;
    return 0;
}

void exec_start(struct session *s, uint32_t id, uint8_t version, const agent_exec_req *req)
{
    if (version < 2 && req->flags) {
        send_error(s, id, version, EINVAL, "malformed EXEC request");
        return;
    }
    struct job *j = job_new(s, id, version, JOB_EXEC);
    if (!j)
        return;
    bool stream = req->flags & AGENT_EXEC_STDIN_STREAM;
    bool tty = req->flags & AGENT_EXEC_TTY;
    bool has_input = !tty && (stream || req->stdin_len);
    size_t argc = req->argv.count, envc = req->env.count;
    struct run_as *u = NULL;
    if (req->user) {
        const char *why = NULL;
        int r;
        if (!(u = malloc(sizeof(*u)))) {
            send_error(s, id, version, ENOMEM, "out of memory");
            job_free(j);
            return;
        }
        if ((r = resolve_user(req->user, req->root, u, &why)) < 0) {
            send_error(s, id, version, -r, "cannot run as user '%s': %s", req->user, why);
            free(u);
            job_free(j);
            return;
        }
    }
    char **argv = calloc(argc + 1, sizeof(char *));
    char **env = calloc(envc + 4, sizeof(char *));
    int pout[2] = {-1, -1}, perr[2] = {-1, -1}, pin[2] = {-1, -1};
    int devnull = -1, master = -1, slave = -1, pty_dup = -1;
    char **envp = NULL;
    bool ok = false;
    if (!argv || !env || inq_append(j, req->stdin_data, req->stdin_len) < 0) {
        send_error(s, id, version, ENOMEM, "out of memory");
        goto out;
    }
    size_t i = 0;
    for (const char *a = agent_strv_next(&req->argv, NULL); a; a = agent_strv_next(&req->argv, a))
        argv[i++] = (char *)a;
    i = 0;
    if (u) { /* the user's own first: the request's entries win */
        env[i++] = u->env_home;
        env[i++] = u->env_user;
        env[i++] = u->env_logname;
    }
    for (const char *e = agent_strv_next(&req->env, NULL); e; e = agent_strv_next(&req->env, e))
        env[i++] = (char *)e;
    envc = i;

    if (tty) {
        /* one terminal for stdin, stdout and stderr; the master is read (out), written (in)
         * and resized (pty) through three descriptors, each closed on its own */
        int r = pty_open(req->tty_rows, req->tty_cols, &master, &slave);
        if (r < 0) {
            send_error(s, id, version, -r, "cannot create a terminal: %s", strerror(-r));
            goto out;
        }
        if (u) { /* the user owns its terminal, as after a login */
            if (fchown(slave, u->uid, u->gid) < 0)
                logmsg("cannot chown the terminal: %s", strerror(errno));
        }
        pout[0] = master;
        master = -1;
        if ((pin[1] = fcntl(pout[0], F_DUPFD_CLOEXEC, 3)) < 0 ||
            (pty_dup = fcntl(pout[0], F_DUPFD_CLOEXEC, 3)) < 0) {
            send_error(s, id, version, errno, "cannot create a terminal: %s", strerror(errno));
            goto out;
        }
    } else if (pipe2(pout, O_CLOEXEC) < 0 || pipe2(perr, O_CLOEXEC) < 0 ||
               (has_input ? pipe2(pin, O_CLOEXEC)
                          : (devnull = open("/dev/null", O_RDONLY | O_CLOEXEC))) < 0) {
        send_error(s, id, version, errno, "cannot create pipes: %s", strerror(errno));
        goto out;
    }
    envp = merge_env(env, envc);
    if (!envp) {
        send_error(s, id, version, ENOMEM, "out of memory");
        goto out;
    }
    volatile struct exec_fail f = {0, 0};
    const char *cwd = req->cwd ? req->cwd : "/";
    int in = tty ? slave : has_input ? pin[0] : devnull;
    /* the parent resumes once the child called execve (or _exit): f is then final */
    pid_t pid = tty ? spawn_child(argv, envp, cwd, req->root, slave, slave, slave, true, u, &f)
                    : spawn_child(argv, envp, cwd, req->root, in, pout[1], perr[1], false, u, &f);
    if (pid < 0) {
        send_error(s, id, version, errno, "cannot fork: %s", strerror(errno));
        goto out;
    }
    close_fd(&pout[1]);
    close_fd(&perr[1]);
    close_fd(&pin[0]);
    close_fd(&slave); /* the command holds it now: its end (EIO on the master) is the end */
    if (f.stage == 2) {
        /* no such command, or not executable: like a shell, a message on the command's stderr
         * and an exit status of 127 or 126 (the child's), reported by the usual EXIT */
        char msg[AGENT_MAX_ERROR_MSG];
        int n = f.err == ENOENT && !strchr(argv[0], '/')
                    ? snprintf(msg, sizeof(msg), "vmctl-agent: %s: command not found\n", argv[0])
                    : snprintf(msg, sizeof(msg), "vmctl-agent: %s: %s\n", argv[0], strerror(f.err));
        size_t len = n < 0 ? 0 : (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1;
        uint8_t *p = out_reserve(s, AGENT_HDR_SIZE + len);
        if (p && len) {
            memcpy(p + AGENT_HDR_SIZE, msg, len);
            out_commit(s, p,
                       agent_encode_header(p, AGENT_HDR_SIZE, AGENT_MSG_STDERR, id, len) + (int)len,
                       version);
        }
    } else if (f.stage) {
        /* exec never happened: reap now, answer ERROR and no EXIT */
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        if (f.stage == 1)
            send_error(s, id, version, f.err, "cannot change directory to '%s': %s", cwd,
                       strerror(f.err));
        else if (f.stage == 3)
            send_error(s, id, version, f.err, "cannot switch to user '%s' (uid %u, gid %u): %s",
                       req->user, (unsigned)u->uid, (unsigned)u->gid, strerror(f.err));
        else if (f.stage == 4)
            send_error(s, id, version, f.err, "cannot make the terminal controlling: %s",
                       strerror(f.err));
        else if (f.stage == 5)
            send_error(s, id, version, f.err, "cannot change root to '%s': %s", req->root,
                       strerror(f.err));
        else
            send_error(s, id, version, f.err, "cannot execute '%s': %s", argv[0], strerror(f.err));
        goto out;
    }
    j->pid = pid;
    j->out_fd = pout[0];
    j->err_fd = perr[0];
    j->in_fd = pin[1];
    j->pty_fd = pty_dup;
    pty_dup = -1;
    j->stream = stream;
    j->in_eof = !stream;
    j->deadline_ms = req->timeout_ms ? now_ms() + req->timeout_ms : 0;
    pout[0] = perr[0] = pin[1] = -1;
    fcntl(j->out_fd, F_SETFL, O_NONBLOCK);
    if (j->err_fd >= 0)
        fcntl(j->err_fd, F_SETFL, O_NONBLOCK);
    if (j->in_fd >= 0)
        fcntl(j->in_fd, F_SETFL, O_NONBLOCK);
    ok = true;
out:
    for (int k = 0; k < 2; k++) {
        close_fd(&pout[k]);
        close_fd(&perr[k]);
        close_fd(&pin[k]);
    }
    close_fd(&devnull);
    close_fd(&master);
    close_fd(&slave);
    close_fd(&pty_dup);
    free(argv);
    free(env);
    free(envp);
    free(u);
    if (!ok)
        job_free(j);
}

/* Read one chunk of a job's output (command pipe or file) into a STDOUT/STDERR frame. */
void job_read(struct job *j, int *fd, uint8_t type)
{
    size_t chunk = j->kind == JOB_GET ? FILE_CHUNK : AGENT_CHUNK_SIZE;
    uint8_t *p = out_reserve(SESS(j), AGENT_HDR_SIZE + chunk);
    if (!p)
        return;
    ssize_t n = read(*fd, p + AGENT_HDR_SIZE, chunk);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n < 0 && j->kind == JOB_GET) {
        send_error(SESS(j), j->id, j->version, errno, "cannot read '%s': %s", j->path,
                   strerror(errno));
        job_free(j);
        return;
    }
    if (n <= 0) {
        close_fd(fd);
        return;
    }
    j->activity_ms = now_ms();
    out_commit(SESS(j), p, agent_encode_header(p, AGENT_HDR_SIZE, type, j->id, (size_t)n) + (int)n,
               j->version);
}

void job_write_stdin(struct job *j)
{
    while (j->inq_off < j->inq_len) {
        ssize_t w = write(j->in_fd, j->inq + j->inq_off, j->inq_len - j->inq_off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            /* EPIPE: the command does not read its input: drop it (acknowledged all the same,
             * so that the host never waits for window) */
            j->unacked += j->inq_len - j->inq_off;
            j->inq_off = j->inq_len;
            close_fd(&j->in_fd);
            break;
        }
        j->inq_off += (size_t)w;
        j->unacked += (size_t)w;
    }
    bool drained = j->inq_off == j->inq_len;
    job_ack(j, drained);
    if (drained && j->in_eof)
        close_fd(&j->in_fd);
}

/* Background jobs may hold the pipes open after the command exited: stop waiting for them once
 * the pipes were quiet for EXIT_GRACE_MS (never while the send queue holds them back). */
uint64_t job_grace_end(const struct job *j)
{
    uint64_t t = j->exited_ms > j->activity_ms ? j->exited_ms : j->activity_ms;
    return t + EXIT_GRACE_MS;
}

/* EXIT once the job is done: a command reaped with its pipes closed (or the grace period over),
 * a download at the end of its file. */
void job_maybe_finish(struct job *j, uint64_t now)
{
    agent_exit e = {0};
    if (j->kind == JOB_GET) {
        if (j->out_fd >= 0)
            return;
    } else if (j->kind == JOB_EXEC) {
        if (!j->exited_ms)
            return;
        bool open_pipes = j->out_fd >= 0 || j->err_fd >= 0;
        if (open_pipes && now < job_grace_end(j))
            return;
        if (WIFSIGNALED(j->status)) {
            e.signal = (uint32_t)WTERMSIG(j->status);
            e.exit_code = 128 + (int)e.signal;
        } else {
            e.exit_code = WEXITSTATUS(j->status);
        }
        if (j->timed_out)
            e.flags |= AGENT_EXIT_TIMED_OUT;
        job_ack(j, true);
    } else {
        return;
    }
    uint8_t *p = out_reserve(SESS(j), AGENT_HDR_SIZE + 12);
    if (p)
        out_commit(SESS(j), p, agent_encode_exit(p, AGENT_HDR_SIZE + 12, j->id, &e), j->version);
    job_free(j);
}

void reap_children(void)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < MAX_JOBS; i++) {
            struct job *j = &A.jobs[i];
            if (j->used && j->kind == JOB_EXEC && j->pid == pid && !j->exited_ms) {
                j->status = status;
                j->exited_ms = now_ms();
                if (!j->exited_ms)
                    j->exited_ms = 1;
            }
        }
    }
}
