#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* With CUBE_LOG_MAX_MB set (deploy/cube sets it for the services it starts, whose stderr is
 * DATA/log/NAME.log), a process whose stderr is a file keeps it under that size: past it the file becomes
 * NAME.log.1 (the one before goes) and a new one is opened on descriptor 2. A node that creates 100 sandboxes
 * a second writes ~100 KB/s of audit lines: its disk would otherwise fill in days. Unset (a sandbox's agent
 * never has it), the file is left alone. */
#define LOG_CHECK_BYTES (1 << 20) /* the file's real size (other processes may append) is read this often */

static struct {
    char service[64];
    int level;
    int journal;
    FILE *stream;
    char path[4096];   /* stderr's file, when it is one ("" else) */
    long long max;     /* bytes; 0: no cap */
    long long written; /* since the size was last read */
    pthread_mutex_t lock;
} g_log = {.service = "cube", .level = CUBE_LOG_INFO, .lock = PTHREAD_MUTEX_INITIALIZER};

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const int journal_prio[] = {7, 6, 4, 3};

int cube_log_level_parse(const char *s)
{
    if (!s) return -1;
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, level_names[i]) == 0) return i;
    if (strcasecmp(s, "warning") == 0) return CUBE_LOG_WARN;
    return -1;
}

/* True when systemd connected our stderr to the journal: JOURNAL_STREAM is "dev:ino" of that stream. */
static int stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    struct stat st;
    unsigned long dev, ino;
    if (!js || sscanf(js, "%lu:%lu", &dev, &ino) != 2 || fstat(2, &st) < 0) return 0;
    return st.st_dev == dev && st.st_ino == ino;
}

void cube_log_init(const char *service, int level)
{
    pthread_mutex_lock(&g_log.lock);
    if (service) snprintf(g_log.service, sizeof(g_log.service), "%s", service);
    if (level < 0) level = cube_log_level_parse(getenv("CUBE_LOG_LEVEL"));
    g_log.level = level < 0 ? CUBE_LOG_INFO : level;
    g_log.journal = stderr_is_journal();
    const char *cap = getenv("CUBE_LOG_MAX_MB");
    long long mb = cap && *cap ? atoll(cap) : 0;
    g_log.max = mb > 0 ? mb << 20 : 0;
    struct stat st;
    ssize_t n;
    if (!g_log.journal && g_log.max && fstat(2, &st) == 0 && S_ISREG(st.st_mode) &&
        (n = readlink("/proc/self/fd/2", g_log.path, sizeof(g_log.path) - 1)) > 0 && g_log.path[0] == '/') {
        g_log.path[n] = '\0';
        g_log.written = LOG_CHECK_BYTES; /* read its size at the first line */
    } else {
        g_log.path[0] = '\0'; /* (readlink may have written part of one) */
    }
    pthread_mutex_unlock(&g_log.lock);
}

/* Under the lock, after a line went to stderr: past the cap, stderr's file is set aside as .1 and a new one
 * takes descriptor 2. Another process writing the same file (a service's children) may have done it first:
 * then this one only follows it to the new file. */
static void rotate_if_due(size_t n)
{
    if (!g_log.path[0] || (g_log.written += (long long)n) < LOG_CHECK_BYTES) return;
    g_log.written = 0;
    struct stat cur, named;
    if (fstat(2, &cur) < 0 || cur.st_size < g_log.max) return;
    if (stat(g_log.path, &named) == 0 && named.st_ino == cur.st_ino && named.st_dev == cur.st_dev) {
        char old[sizeof(g_log.path) + 2];
        snprintf(old, sizeof(old), "%s.1", g_log.path);
        if (rename(g_log.path, old) < 0) return;
    }
    int fd = open(g_log.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return;
    if (fd != 2) {
        dup2(fd, 2); /* (descriptor 2 stays open across exec, as it was) */
        close(fd);
    }
}

void cube_log_set_stream(FILE *f)
{
    pthread_mutex_lock(&g_log.lock);
    g_log.stream = f;
    pthread_mutex_unlock(&g_log.lock);
}

int cube_log_enabled(cube_log_level level)
{
    return (int)level >= g_log.level;
}

/* Writes s quoted when it holds spaces, quotes, '=' or control bytes, so each line stays one parseable
 * record. */
static void put_value(FILE *f, const char *s)
{
    int plain = *s != '\0';
    for (const char *p = s; *p && plain; p++)
        if (*p == ' ' || *p == '"' || *p == '=' || (unsigned char)*p < 0x20) plain = 0;
    if (plain) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c < 0x20)
            fprintf(f, "\\x%02x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

void cube_log(cube_log_level level, const char *msg, const char *kv_fmt, ...)
{
    if (!cube_log_enabled(level)) return;
    char line[4096];
    FILE *mem = fmemopen(line, sizeof(line), "w");
    if (!mem) return;
    if (g_log.journal && !g_log.stream) {
        fprintf(mem, "<%d>", journal_prio[level]);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        fprintf(mem, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    }
    fprintf(mem, "level=%s svc=%s msg=", level_names[level], g_log.service);
    put_value(mem, msg ? msg : "");
    if (kv_fmt && *kv_fmt) {
        fputc(' ', mem);
        va_list ap;
        va_start(ap, kv_fmt);
        vfprintf(mem, kv_fmt, ap);
        va_end(ap);
    }
    fputc('\n', mem);
    fclose(mem); /* fmemopen NUL-terminates within the buffer, truncating an over-long line */
    size_t n = strlen(line);
    if (n == 0 || line[n - 1] != '\n') { /* truncated: keep the record on one line */
        if (n > sizeof(line) - 2) n = sizeof(line) - 2;
        line[n] = '\n';
        line[n + 1] = '\0';
    }
    pthread_mutex_lock(&g_log.lock);
    FILE *out = g_log.stream ? g_log.stream : stderr;
    fputs(line, out);
    fflush(out);
    if (!g_log.stream) rotate_if_due(strlen(line));
    pthread_mutex_unlock(&g_log.lock);
}
