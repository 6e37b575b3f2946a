/* SPDX-License-Identifier: MIT */
/* A tar reader and a safe extractor for archives made by a guest (`vmctl cp NAME:/dir DST`):
 * nothing in the archive is trusted.
 *
 * The parser (tar_parser_*) is pure: ustar, GNU long names and link names ('L', 'K'), pax
 * extended headers ('x': path, linkpath, size, mtime; 'g' ignored), base-256 numbers. It turns
 * a byte stream fed in pieces of any size into entry / data / end callbacks and checks each
 * header's checksum; data of every entry type is skipped by its size.
 *
 * The extractor (tar_extract_*) writes the entries beneath one directory fd, never following a
 * symbolic link: every parent directory is opened with openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS) (or component by component with O_NOFOLLOW on kernels without it), and
 * every entry is created with *at() calls on its parent's fd. Regular files, directories and
 * symbolic links only; hard links only to a regular file this archive created; devices, FIFOs
 * and anything else are left out and reported. Modes are masked to 0777 & ~umask (no setuid,
 * setgid or sticky bit), nothing is chowned (files belong to the caller), the archive's root
 * entry ("./") never changes the destination, files are written to a temporary name and
 * renamed over what was there (a symlink in the way is replaced, never written through), and
 * an archive that ends inside an entry is an error. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <vmctl/error.h>

#define TAR_BLOCK    512
#define TAR_PATH_MAX 4096        /* longer names are refused */
#define TAR_PAX_MAX  (64 * 1024) /* a larger pax header is an error */

typedef struct tar_entry {
    char type;        /* the ustar typeflag ('0' for '\0' and '7') */
    const char *name; /* as in the archive (long name / pax path applied), NUL-terminated */
    const char *link; /* link target ('1', '2'), "" otherwise */
    uint32_t mode;    /* the header's mode field, all bits */
    uint64_t size;    /* bytes of data that follow */
    int64_t mtime;
    bool name_too_long; /* a long name or pax path beyond TAR_PATH_MAX: name is truncated */
} tar_entry;

typedef struct tar_parser_ops {
    int (*entry)(void *userdata, const tar_entry *e);
    int (*data)(void *userdata, const void *data, size_t len);
    int (*entry_end)(void *userdata);
} tar_parser_ops;

typedef struct tar_parser tar_parser;

int tar_parser_new(const tar_parser_ops *ops, void *userdata, tar_parser **ret);
void tar_parser_free(tar_parser *p);
/* Feed bytes; a callback's negative return stops the parse and is returned (and every later
 * call returns it). Malformed input: -EBADMSG with *why set. */
int tar_parser_feed(tar_parser *p, const void *data, size_t len, const char **why);
/* End of the stream: -EBADMSG (why: truncated) unless it ended between entries. */
int tar_parser_finish(tar_parser *p, const char **why);
/* Entries seen so far (headers of files, not long-name or pax blocks). */
uint64_t tar_parser_entries(const tar_parser *p);

/* The archive path made relative and checked: leading '/' and "./" dropped, empty and "."
 * components dropped, ".." refused. Writes into out (cap bytes); returns its length (0: the
 * root), -EINVAL for "..", -ENAMETOOLONG when it does not fit. */
int tar_path_clean(const char *name, char *out, size_t cap);

typedef struct tar_extract tar_extract;

/* The process's umask, read without changing it (/proc/self/status). */
mode_t tar_umask(void);

/* Extract beneath dirfd (not closed, not changed: its mode and times stay). label names the
 * destination in messages. */
int tar_extract_new(int dirfd, const char *label, tar_extract **ret, vmctl_error **reterr);
void tar_extract_free(tar_extract *t);
/* Feed archive bytes. A failure (I/O on the host, malformed archive) is returned once with its
 * error; later calls return the same code without an error. */
int tar_extract_feed(tar_extract *t, const void *data, size_t len, vmctl_error **reterr);
/* The end of the stream: the directories' modes and times are set, then an error when the
 * archive was truncated or some entries were left out (vm_manager::cp::unsafe_entry, the
 * entries as notes). */
int tar_extract_finish(tar_extract *t, vmctl_error **reterr);
/* Counters for messages and tests. */
uint64_t tar_extract_entries(const tar_extract *t);
uint64_t tar_extract_skipped(const tar_extract *t);

/* Open (creating it) the directory name in parentfd for an extraction: a symbolic link there is
 * replaced by a new directory, never followed; anything else that is not a directory is an
 * error (io). */
int tar_dest_dir(int parentfd, const char *name, const char *label, int *ret, vmctl_error **reterr);

static inline void tar_extract_freep(tar_extract **t)
{
    tar_extract_free(*t);
}
#define cleanup_tar_extract __attribute__((cleanup(tar_extract_freep)))
