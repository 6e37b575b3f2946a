/* SPDX-License-Identifier: MIT */
/* vmctl-agent: the metadata the host pushes (hostname, env in META_DIR) and the INFO reply. */
#include "agent.h"

/* --- metadata and info --- */

static int write_file_mode(const char *path, const void *data, size_t len, mode_t mode)
{
    char tmp[512];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return -errno;
    size_t off = 0;
    int r = 0;
    while (off < len) {
        ssize_t w = write(fd, (const uint8_t *)data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            r = w < 0 ? -errno : -EIO;
            break;
        }
        off += (size_t)w;
    }
    if (r == 0 && fchmod(fd, mode) < 0)
        r = -errno;
    close(fd);
    if (r == 0 && rename(tmp, path) < 0)
        r = -errno;
    if (r < 0)
        unlink(tmp);
    return r;
}

/* Append n bytes of s to a growing buffer, shell-quoted as '...' when quote is set. */
static int append(char **buf, size_t *len, size_t *cap, const char *s, size_t n, bool quote)
{
    size_t need = *len + 4 * n + 3;
    if (need > *cap) {
        size_t c = *cap ? *cap : 1024;
        while (c < need)
            c *= 2;
        char *p = realloc(*buf, c);
        if (!p)
            return -ENOMEM;
        *buf = p;
        *cap = c;
    }
    if (quote)
        (*buf)[(*len)++] = '\'';
    for (size_t i = 0; i < n; i++) {
        if (quote && s[i] == '\'') {
            memcpy(*buf + *len, "'\\''", 4);
            *len += 4;
        } else {
            (*buf)[(*len)++] = s[i];
        }
    }
    if (quote)
        (*buf)[(*len)++] = '\'';
    return 0;
}

void metadata_apply(struct session *s, uint32_t id, uint8_t version, const agent_metadata *m)
{
    mkdir(META_DIR, 0755);
    if (m->hostname[0]) {
        if (sethostname(m->hostname, strlen(m->hostname)) < 0) {
            send_error(s, id, version, errno, "cannot set the hostname: %s", strerror(errno));
            return;
        }
        char line[80];
        int n = snprintf(line, sizeof(line), "%s\n", m->hostname);
        write_file_mode("/etc/hostname", line, (size_t)n, 0644);
    }
    if (m->env.count) {
        /* for later commands (inherited from the agent) and for login shells (/run/vmctl/env) */
        char *buf = NULL;
        size_t len = 0, cap = 0;
        int r = 0;
        for (const char *e = agent_strv_next(&m->env, NULL); e && r == 0;
             e = agent_strv_next(&m->env, e)) {
            const char *eq = strchr(e, '=');
            char *copy = strdup(e);
            if (!copy || putenv(copy) != 0) { /* putenv keeps the string */
                free(copy);
                r = -ENOMEM;
                break;
            }
            if (append(&buf, &len, &cap, "export ", 7, false) < 0 ||
                append(&buf, &len, &cap, e, (size_t)(eq - e) + 1, false) < 0 ||
                append(&buf, &len, &cap, eq + 1, strlen(eq + 1), true) < 0 ||
                append(&buf, &len, &cap, "\n", 1, false) < 0)
                r = -ENOMEM;
        }
        if (r == 0)
            r = write_file_mode(META_DIR "/env", buf ? buf : "", len, 0644);
        free(buf);
        if (r < 0) {
            send_error(s, id, version, -r, "cannot write " META_DIR "/env: %s", strerror(-r));
            return;
        }
    }
    if (m->secret_names.count) {
        if (mkdir(META_DIR "/secrets", 0700) < 0 && errno != EEXIST) {
            send_error(s, id, version, errno, "cannot create " META_DIR "/secrets: %s",
                       strerror(errno));
            return;
        }
        chmod(META_DIR "/secrets", 0700);
        size_t off = 0;
        for (const char *sn = agent_strv_next(&m->secret_names, NULL); sn;
             sn = agent_strv_next(&m->secret_names, sn)) {
            const uint8_t *d = NULL;
            uint32_t l = 0;
            agent_metadata_next_value(m, &off, &d, &l);
            char path[400];
            snprintf(path, sizeof(path), META_DIR "/secrets/%s", sn);
            int r = write_file_mode(path, d, l, 0600);
            if (r < 0) {
                send_error(s, id, version, -r, "cannot write %s: %s", path, strerror(-r));
                return;
            }
        }
    }
    A.metadata_applied = true;
    send_simple(s, id, version, AGENT_MSG_ACK);
}

static uint64_t meminfo_kb(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    return p ? strtoull(p + strlen(key), NULL, 10) : 0;
}

void info_reply(struct session *s, uint32_t id, uint8_t version)
{
    agent_info in = {.running = (uint32_t)running_jobs()};
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    in.uptime_ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    char text[4096];
    int fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, text, sizeof(text) - 1);
        close(fd);
        if (n > 0) {
            text[n] = 0;
            in.mem_total = meminfo_kb(text, "MemTotal:") * 1024;
            in.mem_available = meminfo_kb(text, "MemAvailable:") * 1024;
        }
    }
    fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, text, sizeof(text) - 1);
        close(fd);
        if (n > 0) {
            text[n] = 0;
            char *p = text;
            for (int i = 0; i < 3; i++)
                in.load[i] = (uint32_t)(strtod(p, &p) * 100.0 + 0.5);
        }
    }
    uint8_t *p = out_reserve(s, AGENT_HDR_SIZE + 40);
    if (p)
        out_commit(s, p, agent_encode_info_reply(p, AGENT_HDR_SIZE + 40, id, &in), version);
}

/* --- identity after a restore (docs/snapshots.md) --- */

/* The first NIC that is not loopback, its MAC set to mac ("aa:bb:cc:dd:ee:ff"): down, set, up
 * again when it was. */
static int set_mac(const char *mac)
{
    struct ifreq ifr = {0};
    unsigned b[6];
    if (sscanf(mac, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6)
        return -EINVAL;
    DIR *d = opendir("/sys/class/net");
    if (!d)
        return 0; /* no sysfs: no NIC we know of */
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || strcmp(de->d_name, "lo") == 0 ||
            strlen(de->d_name) >= sizeof(ifr.ifr_name))
            continue;
        memcpy(ifr.ifr_name, de->d_name, strlen(de->d_name) + 1);
        break;
    }
    closedir(d);
    if (!ifr.ifr_name[0])
        return 0;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int r = 0;
    if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0) {
        r = -errno;
        goto out;
    }
    short flags = ifr.ifr_flags;
    if (flags & IFF_UP) {
        ifr.ifr_flags = (short)(flags & ~IFF_UP);
        (void)ioctl(fd, SIOCSIFFLAGS, &ifr);
    }
    ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    for (int i = 0; i < 6; i++)
        ifr.ifr_hwaddr.sa_data[i] = (char)b[i];
    if (ioctl(fd, SIOCSIFHWADDR, &ifr) < 0)
        r = -errno;
    if (flags & IFF_UP) {
        ifr.ifr_flags = flags;
        (void)ioctl(fd, SIOCSIFFLAGS, &ifr);
    }
out:
    close(fd);
    return r;
}

void identity_apply(struct session *s, uint32_t id, uint8_t version, const agent_identity *in)
{
    /* the clock: the snapshot's instant is long past */
    struct timespec ts = {.tv_sec = (time_t)(in->realtime_ns / 1000000000u),
                          .tv_nsec = (long)(in->realtime_ns % 1000000000u)};
    if (clock_settime(CLOCK_REALTIME, &ts) < 0) {
        send_error(s, id, version, errno, "cannot set the clock: %s", strerror(errno));
        return;
    }
    /* the RNG: every clone has the snapshot's state; mix in the host's bytes, credited, then
     * make the CRNG reseed from them now rather than at its next interval */
    int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        send_error(s, id, version, errno, "cannot open /dev/urandom: %s", strerror(errno));
        return;
    }
    struct rand_pool_info *rpi = calloc(1, sizeof(*rpi) + in->n_entropy);
    int r = rpi ? 0 : -ENOMEM;
    if (rpi) {
        rpi->entropy_count = (int)in->n_entropy * 8;
        rpi->buf_size = (int)in->n_entropy;
        memcpy(rpi->buf, in->entropy, in->n_entropy);
        if (ioctl(fd, RNDADDENTROPY, rpi) < 0 || ioctl(fd, RNDRESEEDCRNG) < 0)
            r = -errno;
        explicit_bzero(rpi->buf, in->n_entropy);
        free(rpi);
    }
    close(fd);
    if (r < 0) {
        send_error(s, id, version, -r, "cannot reseed the kernel RNG: %s", strerror(-r));
        return;
    }
    if (in->machine_id[0] && access("/etc/machine-id", F_OK) == 0) {
        char line[80];
        int n = snprintf(line, sizeof(line), "%s\n", in->machine_id);
        if ((r = write_file_mode("/etc/machine-id", line, (size_t)n, 0444)) < 0) {
            send_error(s, id, version, -r, "cannot write /etc/machine-id: %s", strerror(-r));
            return;
        }
    }
    if (in->mac[0] && (r = set_mac(in->mac)) < 0) {
        send_error(s, id, version, -r, "cannot set the MAC address: %s", strerror(-r));
        return;
    }
    send_simple(s, id, version, AGENT_MSG_ACK);
}
