#include "netns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "timeutil.h"

/* The socket's namespace is fixed when it is created; only creation happens inside the sandbox's netns. */
static int socket_in(const char *netns_path, cube_err *err)
{
    int home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (home < 0) return cube_err_sys(err, errno, "open own netns");
    int target = open(netns_path, O_RDONLY | O_CLOEXEC);
    if (target < 0) {
        int e = errno;
        close(home);
        return cube_err_sys(err, e == ENOENT ? ENOENT : e, "open %s", netns_path);
    }
    int fd = -1;
    if (setns(target, CLONE_NEWNET) < 0) {
        cube_err_sys(err, errno, "enter %s", netns_path);
    } else {
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int e = errno;
        if (setns(home, CLONE_NEWNET) < 0) abort(); /* a thread stuck in a sandbox's netns must not go on */
        if (fd < 0) cube_err_sys(err, e, "socket in %s", netns_path);
    }
    close(target);
    close(home);
    return fd;
}

int cube_netns_connect(const char *netns_path, uint16_t port, cube_err *err)
{
    int fd = socket_in(netns_path, err);
    if (fd < 0) return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        return cube_err_sys(err, e, "connect to port %u in %s", port, netns_path);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static int wait_io(int fd, short ev, int64_t deadline, cube_err *err)
{
    int64_t left = deadline - cube_now_mono_ms();
    if (left <= 0) return cube_err_set(err, ETIMEDOUT, "no answer in time");
    struct pollfd p = {fd, ev, 0};
    int n = poll(&p, 1, (int)left);
    if (n == 0) return cube_err_set(err, ETIMEDOUT, "no answer in time");
    if (n < 0) return cube_err_sys(err, errno, "poll");
    return 0;
}

int cube_netns_http(const char *netns_path, uint16_t port, const char *method, const char *path,
                    const char *body, int *status, char *resp_body, size_t cap, int timeout_ms, cube_err *err)
{
    int fd = cube_netns_connect(netns_path, port, err);
    if (fd < 0) return -1;
    return cube_netns_http_on(fd, method, path, body, status, resp_body, cap, timeout_ms, err);
}

/* the head's end, or NULL while it has not all come */
static const char *head_end(const char *buf, size_t len)
{
    for (size_t i = 0; i + 3 < len; i++)
        if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' && buf[i + 3] == '\n')
            return buf + i + 4;
    return NULL;
}

int cube_http_answer_complete(const char *buf, size_t len)
{
    const char *end = head_end(buf, len);
    if (!end) return 0;
    int status = 0;
    /* "HTTP/1.x NNN": the status at a fixed place */
    if (end - buf < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ') return 0;
    for (int i = 9; i < 12; i++) {
        if (buf[i] < '0' || buf[i] > '9') return 0;
        status = status * 10 + (buf[i] - '0');
    }
    if (status < 200 || status == 204 || status == 304) return 1;
    /* Content-Length, any case, at the start of a line of the head */
    static const char name[] = "content-length:";
    for (const char *line = buf; line < end;) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        if (!nl) break;
        size_t ll = (size_t)(nl - line);
        if (ll > sizeof(name) - 1 && strncasecmp(line, name, sizeof(name) - 1) == 0) {
            const char *v = line + sizeof(name) - 1;
            while (v < nl && (*v == ' ' || *v == '\t')) v++;
            size_t want = 0;
            int digits = 0;
            for (; v < nl && *v >= '0' && *v <= '9' && digits < 12; v++, digits++)
                want = want * 10 + (size_t)(*v - '0');
            if (!digits) return 0; /* not a length we can trust: read to the close */
            return len - (size_t)(end - buf) >= want;
        }
        line = nl + 1;
    }
    return 0;
}

int cube_netns_http_on(int fd, const char *method, const char *path, const char *body, int *status,
                       char *resp_body, size_t cap, int timeout_ms, cube_err *err)
{
    int64_t deadline = cube_now_mono_ms() + timeout_ms;
    size_t blen = body ? strlen(body) : 0;
    char *req = NULL;
    int n = asprintf(&req,
                     "%s %s HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: "
                     "%zu\r\n\r\n%s",
                     method, path, blen, body ? body : "");
    if (n < 0) {
        close(fd);
        return cube_err_set(err, ENOMEM, "out of memory");
    }
    int rc = 0;
    for (int off = 0; off < n && rc == 0;) {
        if ((rc = wait_io(fd, POLLOUT, deadline, err)) < 0) break;
        ssize_t w =
            send(fd, req + off, (size_t)(n - off), MSG_NOSIGNAL); /* a closed peer: EPIPE, no signal */
        if (w < 0 && errno != EINTR) rc = cube_err_sys(err, errno, "send");
        if (w > 0) off += (int)w;
    }
    free(req);
    char buf[16384];
    size_t len = 0;
    while (rc == 0) {
        if ((rc = wait_io(fd, POLLIN, deadline, err)) < 0) break;
        ssize_t r = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) rc = cube_err_sys(err, errno, "receive");
        if (r <= 0 || len + (size_t)r >= sizeof(buf) - 1) {
            if (r > 0) len += (size_t)r;
            break;
        }
        len += (size_t)r;
        if (cube_http_answer_complete(buf, len)) break;
    }
    close(fd);
    if (rc < 0) return -1;
    buf[len] = '\0';
    if (len == 0) return cube_err_set(err, ECONNRESET, "connection closed without an answer");
    if (sscanf(buf, "HTTP/%*s %d", status) != 1) return cube_err_set(err, EPROTO, "malformed HTTP answer");
    const char *b = strstr(buf, "\r\n\r\n");
    if (resp_body && cap) snprintf(resp_body, cap, "%s", b ? b + 4 : "");
    return 0;
}
