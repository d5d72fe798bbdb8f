/* A build step's command through the sandbox's agent (see build_exec.h). HTTP/1.0, so the agent's reply is
 * the Connect stream itself, ending when the connection closes: envelopes of 1 flag byte, a 4-byte length
 * and JSON (ProcessEvent start/data/end; the end-of-stream envelope carries an error, if any). */
#include "build_exec.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "connect.h"
#include "cubelet_internal.h"
#include "netns.h"
#include "timeutil.h"

#define LINE_MAX_BYTES 4096

typedef struct stream_lines {
    char buf[LINE_MAX_BYTES];
    size_t len;
} stream_lines;

/* Output comes in arbitrary pieces: complete lines go out, a partial one waits (a very long one is cut). */
static void feed(const build_cmd *cmd, stream_lines *sl, const char *name, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n' || sl->len == sizeof(sl->buf) - 1) {
            sl->buf[sl->len] = '\0';
            if (sl->len && sl->buf[sl->len - 1] == '\r') sl->buf[sl->len - 1] = '\0';
            if (cmd->on_line) cmd->on_line(cmd->arg, name, sl->buf);
            sl->len = 0;
            if (p[i] == '\n') continue;
        }
        sl->buf[sl->len++] = (char)p[i];
    }
}

static void flush(const build_cmd *cmd, stream_lines *sl, const char *name)
{
    if (!sl->len) return;
    sl->buf[sl->len] = '\0';
    if (cmd->on_line) cmd->on_line(cmd->arg, name, sl->buf);
    sl->len = 0;
}

static char *request_body(const build_cmd *cmd, size_t *len)
{
    cJSON *in = cJSON_CreateObject(), *p = cJSON_AddObjectToObject(in, "process");
    cJSON_AddStringToObject(p, "cmd", "/bin/sh");
    cJSON *args = cJSON_AddArrayToObject(p, "args");
    cJSON_AddItemToArray(args, cJSON_CreateString("-c"));
    cJSON_AddItemToArray(args, cJSON_CreateString(cmd->script));
    cJSON *envs = cmd->env ? cJSON_Duplicate(cmd->env, 1) : cJSON_CreateObject();
    if (!cJSON_GetObjectItemCaseSensitive(envs, "PATH"))
        cJSON_AddStringToObject(envs, "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    cJSON_AddItemToObject(p, "envs", envs);
    if (cmd->cwd && *cmd->cwd) cJSON_AddStringToObject(p, "cwd", cmd->cwd);
    if (cmd->tag) cJSON_AddStringToObject(in, "tag", cmd->tag);
    char *json = cJSON_PrintUnformatted(in);
    cJSON_Delete(in);
    if (!json) return NULL;
    unsigned char *env = connect_envelope(0, json, strlen(json), len);
    free(json);
    return (char *)env;
}

static int send_all(int fd, const char *p, size_t n, cube_err *err)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return cube_err_sys(err, errno, "send to the agent");
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One envelope's JSON: output lines, the end event (exit code), or the stream's end (error or none). */
static int on_envelope(const build_cmd *cmd, stream_lines *out, stream_lines *errl, uint8_t flags,
                       const char *json, size_t len, int *exit_code, bool *ended, cube_err *err)
{
    cJSON *j = cJSON_ParseWithLength(json, len);
    if (!j) return cube_err_set(err, EPROTO, "the agent sent a malformed event");
    int rc = 0;
    if (flags & CONNECT_FLAG_END) {
        const cJSON *e = cJSON_GetObjectItem(j, "error");
        const char *msg = cJSON_GetStringValue(cJSON_GetObjectItem(e, "message"));
        if (e) rc = cube_err_set(err, EIO, "%s", msg ? msg : "the agent ended the command with an error");
        *ended = true;
    } else {
        const cJSON *ev = cJSON_GetObjectItem(j, "event");
        const cJSON *data = cJSON_GetObjectItem(ev, "data"), *end = cJSON_GetObjectItem(ev, "end");
        const cJSON *start = cJSON_GetObjectItem(ev, "start");
        if (start && cmd->detach) { /* it runs: the stream is left (the agent keeps the process) */
            const cJSON *pid = cJSON_GetObjectItem(start, "pid");
            *exit_code = cJSON_IsNumber(pid) ? (int)pid->valuedouble : 0;
            *ended = true;
        }
        const char *names[] = {"stdout", "stderr"};
        for (int k = 0; data && k < 2; k++) {
            const char *b64 = cJSON_GetStringValue(cJSON_GetObjectItem(data, names[k]));
            size_t n = 0;
            unsigned char *raw = b64 ? b64_decode(b64, &n) : NULL;
            if (raw) feed(cmd, k ? errl : out, names[k], raw, n);
            free(raw);
        }
        if (end) {
            const cJSON *code = cJSON_GetObjectItem(end, "exitCode");
            *exit_code = cJSON_IsNumber(code) ? (int)code->valuedouble : 0; /* proto JSON omits a zero */
            const char *status = cJSON_GetStringValue(cJSON_GetObjectItem(end, "status"));
            if (!cJSON_IsNumber(code) && status && strncmp(status, "signal", 6) == 0) *exit_code = 128;
        }
    }
    cJSON_Delete(j);
    return rc;
}

int build_exec(const build_cmd *cmd, int *exit_code, cube_err *err)
{
    *exit_code = -1;
    size_t blen = 0;
    char *body = request_body(cmd, &blen);
    if (!body) return cube_err_set(err, ENOMEM, "out of memory");
    char user[128], *auth = NULL;
    snprintf(user, sizeof(user), "%s:", cmd->user && *cmd->user ? cmd->user : "root");
    auth = b64_encode((const unsigned char *)user, strlen(user));
    char head[512];
    int hl = snprintf(head, sizeof(head),
                      "POST /process.Process/Start HTTP/1.0\r\nHost: localhost\r\n"
                      "Content-Type: application/connect+json\r\nConnect-Protocol-Version: 1\r\n"
                      "Authorization: Basic %s\r\nContent-Length: %zu\r\n\r\n",
                      auth ? auth : "", blen);
    free(auth);
    int fd = cube_netns_connect(cmd->netns, ENVD_PORT, err);
    if (fd < 0 || send_all(fd, head, (size_t)hl, err) < 0 || send_all(fd, body, blen, err) < 0) {
        free(body);
        if (fd >= 0) close(fd);
        return -1;
    }
    free(body);
    int64_t deadline = cube_now_mono_ms() + (cmd->timeout_ms > 0 ? cmd->timeout_ms : 3600 * 1000);
    size_t cap = 1 << 16, len = 0, off = 0;
    unsigned char *buf = malloc(cap);
    stream_lines *out = calloc(1, sizeof(*out)), *errl = calloc(1, sizeof(*errl));
    bool head_done = false, ended = false;
    int rc = 0, status = 0;
    if (!buf || !out || !errl) rc = cube_err_set(err, ENOMEM, "out of memory");
    while (rc == 0 && !ended) {
        if (cmd->cancelled && cmd->cancelled(cmd->arg)) {
            rc = cube_err_set(err, ECANCELED, "the build was stopped");
            break;
        }
        int64_t left = deadline - cube_now_mono_ms();
        if (left <= 0) {
            rc = cube_err_set(err, ETIMEDOUT, "the command did not end within %d s", cmd->timeout_ms / 1000);
            break;
        }
        struct pollfd p = {fd, POLLIN, 0};
        int n = poll(&p, 1, left < 500 ? (int)left : 500);
        if (n < 0 && errno != EINTR) rc = cube_err_sys(err, errno, "poll");
        if (n <= 0) continue;
        if (len == cap) { /* a whole envelope must fit: they are at most CONNECT_MAX_MESSAGE */
            if (off) {
                memmove(buf, buf + off, len - off);
                len -= off;
                off = 0;
            } else if (cap < CONNECT_MAX_MESSAGE + CONNECT_ENVELOPE_HDR) {
                unsigned char *nb = realloc(buf, cap * 2);
                if (!nb) {
                    rc = cube_err_set(err, ENOMEM, "out of memory");
                    break;
                }
                buf = nb;
                cap *= 2;
            } else {
                rc = cube_err_set(err, EPROTO, "the agent sent an event too large");
                break;
            }
        }
        ssize_t r = recv(fd, buf + len, cap - len, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            rc = cube_err_sys(err, errno, "read from the agent");
            break;
        }
        if (r == 0) {
            rc = cube_err_set(err, EPIPE, "the agent closed the stream before the command ended");
            break;
        }
        len += (size_t)r;
        if (!head_done) {
            unsigned char *e = memmem(buf, len, "\r\n\r\n", 4);
            if (!e) continue;
            if (sscanf((char *)buf, "HTTP/%*s %d", &status) != 1) status = 0;
            off = (size_t)(e + 4 - buf);
            head_done = true;
            if (status != 200) {
                char msg[512];
                size_t m = len - off < sizeof(msg) - 1 ? len - off : sizeof(msg) - 1;
                memcpy(msg, buf + off, m);
                msg[m] = '\0';
                rc = cube_err_set(err, EIO, "the agent refused the command (%d): %s", status, msg);
                break;
            }
        }
        while (rc == 0 && !ended && len - off >= CONNECT_ENVELOPE_HDR) {
            uint8_t flags = buf[off];
            uint32_t n32 = (uint32_t)buf[off + 1] << 24 | (uint32_t)buf[off + 2] << 16 |
                           (uint32_t)buf[off + 3] << 8 | buf[off + 4];
            if (n32 > CONNECT_MAX_MESSAGE) {
                rc = cube_err_set(err, EPROTO, "the agent sent an event too large");
                break;
            }
            if (len - off < CONNECT_ENVELOPE_HDR + n32) break;
            rc = on_envelope(cmd, out, errl, flags, (const char *)buf + off + CONNECT_ENVELOPE_HDR, n32,
                             exit_code, &ended, err);
            off += CONNECT_ENVELOPE_HDR + n32;
        }
        if (off == len) off = len = 0;
    }
    if (out) flush(cmd, out, "stdout");
    if (errl) flush(cmd, errl, "stderr");
    free(out);
    free(errl);
    free(buf);
    close(fd);
    if (rc == 0 && *exit_code < 0)
        return cube_err_set(err, EPROTO, "the command's stream ended without its exit");
    return rc;
}
