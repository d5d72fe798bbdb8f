#include <errno.h>
#include <linux/prctl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "proc_title.h"

int proc_title_set(const char *args, size_t args_len, const char *env, size_t env_len)
{
    /* the kernel reads them only from anonymous memory (FOLL_ANON): a copy on a page of their own */
    size_t total = args_len + (env ? env_len : 0);
    char *copy = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (copy == MAP_FAILED) return -1;
    memcpy(copy, args, args_len);
    if (env) memcpy(copy + args_len, env, env_len);
    args = copy;
    env = env ? copy + args_len : NULL;
    /* PR_SET_MM_MAP sets the whole layout at once: the rest of it is given as it is now */
    char buf[2048];
    FILE *f = fopen("/proc/self/stat", "re");
    if (!f) goto fail;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name (field 2) may hold spaces: count from its end */
    if (!p) goto invalid;
    unsigned long v[52] = {0};
    int field = 2;
    for (char *q = p + 1; *q && field < 51;) {
        while (*q == ' ') q++;
        field++;
        char *end;
        v[field] = strtoul(q, &end, 10);
        if (end == q && field != 3) goto invalid; /* field 3 is the state, a letter */
        q = end == q ? q + 1 : end;
    }
    if (field < 51) goto invalid;
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
    goto fail;
invalid:
    errno = EINVAL;
fail:;
    int e = errno;
    munmap(copy, total);
    errno = e;
    return -1;
}
