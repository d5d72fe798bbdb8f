#include "sandbox_log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int cl_sandbox_log_trim(const char *path, off_t max, size_t keep)
{
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return errno == ENOENT ? 0 : -1;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    if (st.st_size <= max) {
        close(fd);
        return 0;
    }
    char *buf = malloc(keep + 128);
    if (!buf) {
        close(fd);
        errno = ENOMEM;
        return -1;
    }
    off_t from = st.st_size - (off_t)keep;
    ssize_t n = pread(fd, buf + 128, keep, from);
    int rc = -1;
    if (n > 0) {
        char *tail = memchr(buf + 128, '\n', (size_t)n); /* from the start of a line */
        tail = tail ? tail + 1 : buf + 128;
        size_t tl = (size_t)n - (size_t)(tail - (buf + 128));
        char note[128];
        int nl = snprintf(note, sizeof(note), "... %lld bytes of this sandbox's earlier log dropped ...\n",
                          (long long)(st.st_size - (off_t)tl));
        char *start = tail - nl;
        memcpy(start, note, (size_t)nl);
        size_t total = tl + (size_t)nl;
        if (pwrite(fd, start, total, 0) == (ssize_t)total && ftruncate(fd, (off_t)total) == 0) rc = 1;
    }
    int e = errno;
    free(buf);
    close(fd);
    errno = e;
    return rc;
}
