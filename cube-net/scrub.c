/* Sockets left in a released slot's namespace (see scrub.h), over sock_diag with libmnl. */
#include "scrub.h"

#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/inet_diag.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "net_internal.h"

/* More TCP sockets than this left behind: not all are destroyed, and the count says so. */
#define SCRUB_MAX 128
/* The TCP states asked for, in the kernel's numbering (include/net/tcp_states.h): ESTABLISHED (1) to CLOSING
 * (11) and NEW_SYN_RECV (12), all in the namespace's own table; not LISTEN (10) nor BOUND_INACTIVE (13),
 * whose tables are the node's whole (shared by every namespace: tens of thousands of buckets walked a dump).
 * Neither outlives its process; the namespace's sockstat counts listeners. */
#define TCP_STATES_OWN_TABLE ((((1u << 12) - 1) & ~1u & ~(1u << 10)) | (1u << 12))

typedef struct scrub {
    struct mnl_socket *sock;
    unsigned portid, seq;
    int count;    /* sockets seen by the dumps */
    bool collect; /* keep the TCP ones' ids, to destroy them */
    int ntcp;
    struct inet_diag_msg tcp[SCRUB_MAX];
    char buf[16384];
} scrub;

static int on_socket(const struct nlmsghdr *h, void *data)
{
    scrub *s = data;
    s->count++;
    if (s->collect && s->ntcp < SCRUB_MAX && h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
        memcpy(&s->tcp[s->ntcp++], mnl_nlmsg_get_payload(h), sizeof(struct inet_diag_msg));
    return MNL_CB_OK;
}

/* Sends h (built in req, not s->buf) and reads until its dump ends or its ack comes. */
static int transact(scrub *s, struct nlmsghdr *h, cube_err *err)
{
    h->nlmsg_seq = ++s->seq;
    if (mnl_socket_sendto(s->sock, h, h->nlmsg_len) < 0) return cube_err_sys(err, errno, "sock_diag send");
    for (;;) {
        ssize_t n = mnl_socket_recvfrom(s->sock, s->buf, sizeof(s->buf));
        if (n < 0) return cube_err_sys(err, errno, "sock_diag receive");
        int rc = mnl_cb_run(s->buf, (size_t)n, h->nlmsg_seq, s->portid, on_socket, s);
        if (rc < 0) return cube_err_sys(err, errno, "sock_diag");
        if (rc == MNL_CB_STOP) return 0;
    }
}

/* Every socket of family (and protocol, for IP; TCP_STATES_OWN_TABLE for TCP) in the namespace, counted; TCP
 * ones kept with collect. */
static int dump(scrub *s, int family, int protocol, bool collect, cube_err *err)
{
    char req[256];
    struct nlmsghdr *h = mnl_nlmsg_put_header(req);
    h->nlmsg_type = SOCK_DIAG_BY_FAMILY;
    h->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    if (family == AF_UNIX) {
        struct unix_diag_req *r = mnl_nlmsg_put_extra_header(h, sizeof(*r));
        r->sdiag_family = AF_UNIX;
        r->udiag_states = ~0u;
    } else {
        struct inet_diag_req_v2 *r = mnl_nlmsg_put_extra_header(h, sizeof(*r));
        r->sdiag_family = (uint8_t)family;
        r->sdiag_protocol = (uint8_t)protocol;
        r->idiag_states = TCP_STATES_OWN_TABLE;
    }
    s->collect = collect;
    int rc = transact(s, h, err);
    s->collect = false;
    /* a kernel without IPv6 has no AF_INET6 sockets to list */
    if (rc < 0 && family == AF_INET6 && (err->code == ENOENT || err->code == EAFNOSUPPORT)) {
        cube_err_clear(err);
        return 0;
    }
    return rc;
}

/* One TCP socket, by the id (addresses, ports, cookie) its dump gave: closed as if by a reset, TIME_WAIT
 * included. One gone meanwhile is not an error: the count that follows is what matters. */
static void destroy(scrub *s, const struct inet_diag_msg *m)
{
    char req[256];
    struct nlmsghdr *h = mnl_nlmsg_put_header(req);
    h->nlmsg_type = SOCK_DESTROY;
    h->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    struct inet_diag_req_v2 *r = mnl_nlmsg_put_extra_header(h, sizeof(*r));
    r->sdiag_family = m->idiag_family;
    r->sdiag_protocol = IPPROTO_TCP;
    r->idiag_states = ~0u;
    r->id = m->id;
    cube_err e = {0};
    transact(s, h, &e);
}

/* The sockets a namespace's sockstat files (opened inside it) count: every "inuse" figure (TCP, UDP,
 * UDPLITE, RAW, each IPv4 and IPv6) and TCP's TIME_WAIT ("tw"; "orphan" and "alloc" are the node's). */
static int sockstat_sockets(int fd)
{
    char buf[1024];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0) return -1;
    buf[n] = '\0';
    int total = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        char *p = strstr(line, " inuse ");
        if (p && strncmp(line, "FRAG", 4) != 0) total += atoi(p + 7);
        if (strncmp(line, "TCP:", 4) == 0 && (p = strstr(line, " tw "))) total += atoi(p + 4);
    }
    return total;
}

int cn_scrub_sockets(int ns_fd, int host_ns, int *left, cube_err *err)
{
    *left = 0;
    if (setns(ns_fd, CLONE_NEWNET) < 0) return cube_err_sys(err, errno, "enter the slot's namespace");
    /* opened inside: a netlink socket and /proc's net files belong to the namespace they were made in */
    struct mnl_socket *sock = mnl_socket_open2(NETLINK_SOCK_DIAG, SOCK_CLOEXEC);
    int open_errno = errno;
    int stat4 = open("/proc/thread-self/net/sockstat", O_RDONLY | O_CLOEXEC);
    int stat6 = open("/proc/thread-self/net/sockstat6", O_RDONLY | O_CLOEXEC);
    cn_return_home(host_ns);
    scrub *s = sock ? calloc(1, sizeof(*s)) : NULL;
    int rc = 0;
    if (!sock) {
        rc = cube_err_sys(err, open_errno, "sock_diag socket");
    } else if (stat4 < 0) {
        rc = cube_err_sys(err, errno, "the namespace's sockstat");
    } else if (!s || mnl_socket_bind(sock, 0, MNL_SOCKET_AUTOPID) < 0) {
        rc = cube_err_sys(err, s ? errno : ENOMEM, "sock_diag socket");
    } else {
        s->sock = sock;
        s->portid = mnl_socket_get_portid(sock);
        s->seq = (unsigned)time(NULL);
        static const int families[2] = {AF_INET, AF_INET6};
        for (int i = 0; i < 2 && rc == 0; i++) {
            s->ntcp = 0;
            rc = dump(s, families[i], IPPROTO_TCP, true, err);
            for (int k = 0; rc == 0 && k < s->ntcp; k++) destroy(s, &s->tcp[k]);
        }
        s->count = 0;
        if (rc == 0) rc = dump(s, AF_UNIX, 0, false, err);
        int inet = sockstat_sockets(stat4), inet6 = stat6 >= 0 ? sockstat_sockets(stat6) : 0;
        if (rc == 0 && (inet < 0 || inet6 < 0))
            rc = cube_err_set(err, EIO, "the namespace's sockstat unread");
        *left = s->count + inet + inet6;
    }
    if (sock) mnl_socket_close(sock);
    if (stat4 >= 0) close(stat4);
    if (stat6 >= 0) close(stat6);
    free(s);
    return rc;
}
