/* Header injection on a connection's own thread (see egress_mitm.h). */
#include "egress_mitm.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "egress_http.h"
#include "net_internal.h"
#include "log.h"
#include "metrics.h"
#include "timeutil.h"

typedef struct mitm {
    cube_net *n;
    cn_mitm_job *job;
    SSL *ds, *us; /* the sandbox's side, the server's */
    BIO *rb;      /* the sandbox's bytes, fed from its socket (the ClientHello was read before) */
    int up;
} mitm;

static void io_timeouts(int fd)
{
    struct timeval tv = {.tv_sec = CN_MITM_IO_MS / 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
}

static bool stopping(cube_net *n)
{
    return __atomic_load_n(&n->mitm_stopping, __ATOMIC_ACQUIRE);
}

/* the sandbox still holds its lease (a killed one's connections end with it, not at the idle timeout) */
static bool lease_held(mitm *m)
{
    pthread_mutex_lock(&m->n->lock);
    int idx = cube_net_slot_of_addr(m->n, m->job->sandbox);
    bool held = idx && strcmp(m->n->slots[idx].lease, m->job->lease) == 0;
    pthread_mutex_unlock(&m->n->lock);
    return held;
}

/* more of the sandbox's bytes into the TLS input: false at its end */
static bool feed(mitm *m)
{
    uint8_t buf[16384];
    ssize_t r = recv(m->job->down, buf, sizeof(buf), 0);
    if (r <= 0) return false;
    BIO_write(m->rb, buf, (int)r);
    return true;
}

static bool write_all(SSL *s, const void *p, size_t n)
{
    while (n) {
        int w = SSL_write(s, p, n > 1 << 30 ? 1 << 30 : (int)n);
        if (w <= 0) return false;
        p = (const uint8_t *)p + w;
        n -= (size_t)w;
    }
    return true;
}

/* the proxy's own answer to the sandbox (the request goes nowhere) */
static void answer(mitm *m, int status, const char *why)
{
    const char *reason = status == 421   ? "Misdirected Request"
                         : status == 431 ? "Request Header Fields Too Large"
                         : status == 502 ? "Bad Gateway"
                         : status == 400 ? "Bad Request"
                                         : "Internal Server Error";
    char msg[1024];
    int n = snprintf(
        msg, sizeof(msg),
        "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n"
        "%s\n",
        status, reason, strlen(why) + 1, why);
    write_all(m->ds, msg, (size_t)n);
}

static void log_fail(mitm *m, const char *what, const char *detail)
{
    char a[INET_ADDRSTRLEN];
    cube_log_info("egress inject failed", "lease=%s name=%s address=%s reason=\"%s%s%s\"", m->job->lease,
                  m->job->name, inet_ntop(AF_INET, &m->job->dst.sin_addr, a, sizeof(a)), what,
                  detail ? ": " : "", detail ? detail : "");
    cube_metric_add("cube_net_egress_connections_total{verdict=\"inject_failed\"}",
                    "TCP connections the egress proxy decided, by verdict", 1);
}

static int handshake_down(mitm *m, cube_err *err)
{
    SSL_CTX *ctx = cn_tls_server_ctx(m->n->tls, m->job->name, err);
    if (!ctx) return -1;
    m->ds = SSL_new(ctx);
    SSL_CTX_free(ctx);
    m->rb = BIO_new(BIO_s_mem());
    BIO *wb = BIO_new_socket(m->job->down, BIO_NOCLOSE);
    if (!m->ds || !m->rb || !wb) {
        BIO_free(m->rb);
        BIO_free(wb);
        m->rb = NULL;
        return cube_err_set(err, ENOMEM, "TLS objects");
    }
    BIO_write(m->rb, m->job->head, (int)m->job->head_len);
    BIO_up_ref(m->rb); /* ours to feed; SSL_free drops its own reference */
    SSL_set_bio(m->ds, m->rb, wb);
    SSL_set_accept_state(m->ds);
    for (;;) {
        int rc = SSL_do_handshake(m->ds);
        if (rc == 1) return 0;
        if (SSL_get_error(m->ds, rc) == SSL_ERROR_WANT_READ && !stopping(m->n) && feed(m)) continue;
        char buf[160];
        ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
        ERR_clear_error();
        return cube_err_set(err, EPROTO, "the sandbox's TLS handshake (does it trust the node's CA?): %s",
                            buf);
    }
}

static int connect_up(mitm *m, cube_err *err)
{
    m->up = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (m->up < 0) return cube_err_sys(err, errno, "socket");
    io_timeouts(m->up);
    if (connect(m->up, (struct sockaddr *)&m->job->dst, sizeof(m->job->dst)) < 0)
        return cube_err_sys(err, errno, "connect");
    SSL_CTX *ctx = cn_tls_client_ctx(m->n->tls);
    m->us = SSL_new(ctx);
    SSL_CTX_free(ctx);
    if (!m->us || SSL_set_fd(m->us, m->up) != 1) return cube_err_set(err, ENOMEM, "TLS objects");
    SSL_set_tlsext_host_name(m->us, m->job->name);
    SSL_set1_host(m->us, m->job->name);
    if (SSL_connect(m->us) == 1) return 0;
    long v = SSL_get_verify_result(m->us);
    char buf[160];
    ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
    ERR_clear_error();
    return cube_err_set(err, EPROTO, "TLS to the server: %s",
                        v != X509_V_OK ? X509_verify_cert_error_string(v) : buf);
}

static void relay(mitm *m)
{
    cn_mitm_job *j = m->job;
    const char *names[CN_MAX_HEADER_RULES], *values[CN_MAX_HEADER_RULES];
    for (int i = 0; i < j->nrules; i++) {
        names[i] = j->names[i];
        values[i] = j->values[i];
    }
    cn_http_rw *rw = malloc(sizeof(*rw));
    if (!rw) return;
    cn_http_rw_init(rw, j->name, j->nrules, names, values);
    cn_buf out = {0};
    uint8_t buf[16384];
    int64_t idle_until = cube_now_mono_ms() + CN_MITM_IDLE_MS, next_check = cube_now_mono_ms() + 1000;
    for (bool done = false; !done && !stopping(m->n);) {
        if (cube_now_mono_ms() >= next_check) {
            if (!lease_held(m)) break;
            next_check = cube_now_mono_ms() + 1000;
        }
        bool down_ready = SSL_pending(m->ds) > 0 || BIO_ctrl_pending(m->rb) > 0,
             up_ready = SSL_pending(m->us) > 0;
        if (!down_ready && !up_ready) {
            struct pollfd p[2] = {{.fd = j->down, .events = POLLIN}, {.fd = m->up, .events = POLLIN}};
            int rc = poll(p, 2, 500);
            if (rc < 0 && errno != EINTR) break;
            if (rc <= 0) {
                done = cube_now_mono_ms() > idle_until;
                continue;
            }
            if (p[0].revents && !feed(m)) break; /* the sandbox is done */
            down_ready = p[0].revents != 0;
            up_ready = p[1].revents != 0;
        }
        idle_until = cube_now_mono_ms() + CN_MITM_IDLE_MS;
        while (down_ready && !done) {
            int r = SSL_read(m->ds, buf, sizeof(buf));
            if (r <= 0) {
                done = SSL_get_error(m->ds, r) != SSL_ERROR_WANT_READ;
                break;
            }
            int status = cn_http_rw_feed(rw, buf, (size_t)r, &out);
            if (status) {
                answer(m, status,
                       status == 421
                           ? "cube egress: requests on this connection must be for the name it was opened for"
                           : "cube egress: the request could not be passed on");
                done = true;
                break;
            }
            done = !write_all(m->us, out.data, out.len);
            if (out.data) memset(out.data, 0, out.len);
            out.len = 0;
        }
        if (up_ready && !done) {
            int r = SSL_read(m->us, buf, sizeof(buf));
            if (r > 0)
                done = !write_all(m->ds, buf, (size_t)r);
            else
                done = SSL_get_error(m->us, r) != SSL_ERROR_WANT_READ;
        }
    }
    cn_buf_free(&out);
    explicit_bzero(rw, sizeof(*rw));
    free(rw);
}

static void run(mitm *m)
{
    cube_err err = {0};
    io_timeouts(m->job->down);
    if (handshake_down(m, &err) < 0) {
        log_fail(m, err.msg, NULL);
        return;
    }
    if (connect_up(m, &err) < 0) {
        log_fail(m, err.msg, NULL);
        char why[400];
        snprintf(why, sizeof(why), "cube egress: %s", err.msg);
        answer(m, 502, why);
        return;
    }
    relay(m);
    SSL_shutdown(m->us);
    SSL_shutdown(m->ds);
}

static void *mitm_main(void *arg)
{
    mitm *m = arg;
    cube_net *n = m->n;
    uint32_t addr = m->job->sandbox;
    run(m);
    SSL_free(m->ds);
    SSL_free(m->us);
    BIO_free(m->rb);
    if (m->up >= 0) close(m->up);
    close(m->job->down);
    free(m->job->head);
    explicit_bzero(m->job, sizeof(*m->job)); /* the header values */
    free(m->job);
    free(m);
    pthread_mutex_lock(&n->lock);
    for (int i = 0; i < n->mitm_running; i++)
        if (n->mitm_addr[i] == addr) {
            n->mitm_addr[i] = n->mitm_addr[--n->mitm_running];
            break;
        }
    pthread_cond_broadcast(&n->mitm_done);
    pthread_mutex_unlock(&n->lock);
    return NULL;
}

int cn_mitm_start(cube_net *n, cn_mitm_job *job)
{
    mitm *m = calloc(1, sizeof(*m));
    if (!m) return -1;
    m->n = n;
    m->job = job;
    m->up = -1;
    pthread_mutex_lock(&n->lock);
    int mine = 0;
    for (int i = 0; i < n->mitm_running; i++) mine += n->mitm_addr[i] == job->sandbox;
    bool room = n->tls && n->mitm_running < CN_MITM_MAX_THREADS && mine < CN_MITM_MAX_PER_SANDBOX &&
                !n->mitm_stopping;
    if (room) n->mitm_addr[n->mitm_running++] = job->sandbox;
    pthread_mutex_unlock(&n->lock);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (!room || pthread_create(&t, &attr, mitm_main, m) != 0) {
        pthread_attr_destroy(&attr);
        free(m);
        if (room) {
            pthread_mutex_lock(&n->lock);
            for (int i = 0; i < n->mitm_running; i++)
                if (n->mitm_addr[i] == job->sandbox) {
                    n->mitm_addr[i] = n->mitm_addr[--n->mitm_running];
                    break;
                }
            pthread_mutex_unlock(&n->lock);
        }
        return -1;
    }
    pthread_attr_destroy(&attr);
    return 0;
}

void cn_mitm_stop_all(cube_net *n)
{
    pthread_mutex_lock(&n->lock);
    __atomic_store_n(&n->mitm_stopping, true, __ATOMIC_RELEASE);
    while (n->mitm_running) pthread_cond_wait(&n->mitm_done, &n->lock);
    pthread_mutex_unlock(&n->lock);
}
