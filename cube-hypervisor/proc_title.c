#include <errno.h>
#include <stdbool.h>
#include <linux/prctl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "proc_title.h"

/* The rest of the layout PR_SET_MM_MAP sets, as /proc/self/stat gives it (fields 1-51): the same in every
 * process forked, not exec'd, from the one that read it, so it is read once per image. */
static struct {
    bool have;
    unsigned long v[52];
} layout;

int proc_title_prepare(void)
{
    if (layout.have) return 0;
    char buf[2048];
    FILE *f = fopen("/proc/self/stat", "re");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name (field 2) may hold spaces: count from its end */
    if (!p) return errno = EINVAL, -1;
    int field = 2;
    for (char *q = p + 1; *q && field < 51;) {
        while (*q == ' ') q++;
        field++;
        char *end;
        layout.v[field] = strtoul(q, &end, 10);
        if (end == q && field != 3) return errno = EINVAL, -1; /* field 3 is the state, a letter */
        q = end == q ? q + 1 : end;
    }
    if (field < 51) return errno = EINVAL, -1;
    layout.have = true;
    return 0;
}

int proc_title_set(const char *args, size_t args_len, const char *env, size_t env_len)
{
    if (proc_title_prepare() < 0) return -1;
    /* the kernel reads them only from anonymous memory (FOLL_ANON): a copy on a page of their own */
    size_t total = args_len + (env ? env_len : 0);
    char *copy = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (copy == MAP_FAILED) return -1;
    memcpy(copy, args, args_len);
    if (env) memcpy(copy + args_len, env, env_len);
    args = copy;
    env = env ? copy + args_len : NULL;
    const unsigned long *v = layout.v;
    struct prctl_mm_map m = {
        .start_code = v[26],
        .end_code = v[27],
        .start_stack = v[28],
        .start_data = v[45],
        .end_data = v[46],
        .start_brk = v[47],
        .brk = (uint64_t)(uintptr_t)sbrk(0),
        .arg_start = (uint64_t)(uintptr_t)args,
        .arg_end = (uint64_t)(uintptr_t)(args + args_len),
        .env_start = env ? (uint64_t)(uintptr_t)env : v[50],
        .env_end = env ? (uint64_t)(uintptr_t)(env + env_len) : v[51],
        .exe_fd = (uint32_t)-1,
    };
    if (prctl(PR_SET_MM, PR_SET_MM_MAP, &m, sizeof(m), 0) == 0) return 0;
    int e = errno;
    munmap(copy, total);
    errno = e;
    return -1;
}
