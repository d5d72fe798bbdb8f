/* File uploads as envd's POST /files reads them (the agent's HTTP server in process, on loopback): after a
 * first byte of flags (bit 0: the body is gzip-encoded, bit 1: multipart/form-data, else octet-stream), the
 * bytes are the request body. The destination is always ?path= in a scratch directory (a part's own filename
 * would name any path on this host). Every request gets an answer and the server keeps answering. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "agent.h"
#include "children.h"
#include "fsutil.h"

static agent a;
static http_server *srv;
static int port;
static char dir[64];

static void stop(void)
{
    http_server_stop(srv);
    cube_rm_rf(dir);
}

static void start(void)
{
    cube_err err = {0};
    snprintf(dir, sizeof(dir), "/tmp/cube-fuzz-upload-XXXXXX");
    if (!mkdtemp(dir) || children_start() < 0 || agent_init(&a, "root", &err) < 0) abort();
    srv = http_server_start("127.0.0.1", 0, envd_routes, &a, &err);
    if (!srv) abort();
    port = http_server_port(srv);
    atexit(stop);
}

/* The response's status; -1 when the connection was reset (see below), 0 when nothing came. */
static int roundtrip(const char *req, size_t len)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (fd < 0) abort();
    int rc;
    while ((rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa))) < 0 && errno == EINTR) {
    }
    if (rc < 0) {
        /* refused: the server is gone, a finding; anything else (this client's ports, hundreds of connections
         * a second) is not the server's doing */
        if (errno == ECONNREFUSED) abort();
        close(fd);
        return -1;
    }
    for (size_t off = 0; off < len;) {
        ssize_t n = write(fd, req + off, len - off);
        if (n < 0 && errno == EINTR) continue; /* libFuzzer's timer signal */
        if (n <= 0) break; /* the server may answer (and close) before the whole body went */
        off += (size_t)n;
    }
    /* the server closes after its answer (Connection: close); one that never answers is a finding, once the
     * receive timeout has passed */
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char buf[4096], sink[4096];
    size_t got = 0;
    ssize_t r;
    for (;;) { /* the answer's start, then the rest until the server closes; libFuzzer's timer signal retries
                */
        r = got < sizeof(buf) - 1 ? read(fd, buf + got, sizeof(buf) - 1 - got) : read(fd, sink, sizeof(sink));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        if (got < sizeof(buf) - 1) got += (size_t)r;
    }
    bool reset = r < 0 && errno == ECONNRESET;
    close(fd);
    buf[got] = '\0';
    int status = 0;
    sscanf(buf, "HTTP/1.1 %d", &status);
    /* a server that answers early (a malformed body) and closes with body bytes still unread makes the kernel
     * send a reset, which can take the answer with it: an answer all the same */
    return status || !reset ? status : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!srv) start();
    if (size < 1) return 0;
    uint8_t flags = data[0];
    const char *ctype = flags & 2 ? "multipart/form-data; boundary=cubeBOUNDARY" : "application/octet-stream";
    char head[512];
    int hl = snprintf(head, sizeof(head),
                      "POST /files?path=%s/up/file&username=root HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      "Content-Type: %s\r\n%sContent-Length: %zu\r\n\r\n",
                      dir, ctype, flags & 1 ? "Content-Encoding: gzip\r\n" : "", size - 1);
    char *req = malloc((size_t)hl + size);
    if (!req) return 0;
    memcpy(req, head, (size_t)hl);
    memcpy(req + hl, data + 1, size - 1);
    int status = roundtrip(req, (size_t)hl + size - 1);
    free(req);
    if (status != -1 && (status < 200 || status > 599)) {
        fprintf(stderr, "fuzz_upload: no HTTP answer (status %d)\n", status);
        abort();
    }
    return 0;
}
