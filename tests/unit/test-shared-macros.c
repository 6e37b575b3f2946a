/* SPDX-License-Identifier: MIT */
/* src/shared/macros.h on its own, linked like the guest agent (static, libc only, no cmocka):
 * the cleanup helpers run at scope exit, TAKE_PTR/TAKE_FD hand ownership on. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macros.h"

static int freed;
static void thing_free(int *p)
{
    freed++;
    free(p);
}
DEFINE_POINTER_CLEANUP(thing_free, int, thing_free)
#define cleanup_thing __attribute__((cleanup(thing_freep)))

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);                  \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static int take_fd(void)
{
    cleanup_close int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0);
    return TAKE_FD(fd);
}

int main(void)
{
    static const int arr[7];
    CHECK(ELEMENTSOF(arr) == 7);
    CHECK(streq("a", "a") && !streq("a", "b"));
    {
        cleanup_thing int *t = malloc(sizeof(int));
        cleanup_thing int *none = NULL;
        CHECK(t && !none);
    }
    CHECK(freed == 1);
    char *kept;
    {
        cleanup_free char *p = strdup("x");
        kept = TAKE_PTR(p);
        CHECK(!p);
    }
    CHECK(streq(kept, "x"));
    free(kept);
    int fd = take_fd();
    CHECK(fd >= 0 && fcntl(fd, F_GETFD) >= 0);
    {
        cleanup_close int c = fd;
        CHECK(c == fd);
    }
    CHECK(fcntl(fd, F_GETFD) < 0);
    errno = 0;
    CHECK(neg_errno() == -EIO);
    printf("ok\n");
    return 0;
}
