/* The world test_net's cases run in: a "node" network namespace (with a private mount namespace) for
 * cube-net, and an "uplink" namespace behind it (veth up0) holding the outside networks and their servers: an
 * echo server on PORT, a resolver on DNS_IP:53 (allowed.test and other.test share ALLOWED_IP, wild.test...),
 * web servers on 80 and 443. node_setup() makes it in the calling (Check-forked) process; net_start() starts
 * cube-net in it. Then the probes: traffic from inside a sandbox's namespace to the outside. Needs root. */
#ifndef CUBE_TEST_NET_WORLD_H
#define CUBE_TEST_NET_WORLD_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net.h"

#define ALLOWED_IP "198.51.100.1"
#define DENIED_IP  "203.0.113.1"
#define NODE_IP    "192.0.2.1"
#define PORT       8000
#define DNS_IP     "192.0.2.2"    /* the uplink side: the node's upstream resolver in the names tests */
#define TLS_IP     "198.51.100.2" /* an HTTPS server (secure.test, under the test's own CA) */
#define PRIVATE_IP "10.77.0.1"    /* a private network behind the uplink (an operator's own services) */

extern char *dir;                    /* the test's own directory (cube-net's state and namespaces) */
extern int node_ns, uplink_ns;       /* the two namespaces' descriptors */
extern cube_net net;                 /* started by net_start */
extern struct sockaddr_in last_peer; /* who last connected to the echo server */
extern char upstream_ca[600]; /* the HTTPS server's CA, when a test made one (net_start passes it on) */
extern int flows_cap;         /* the flows each sandbox may have open, when a test sets it */

uint32_t ip4(const char *s);
/* A socket made inside the namespace at path (or of fd ns_fd when path is NULL). */
int ns_socket(const char *path, int ns_fd, int type, int proto);
int listener(int ns_fd, const char *path, int type, int port);
int listener_at_udp(int ns_fd, const char *ip, int port);
int listener_at(int ns_fd, const char *ip, int port);
/* TCP connect from inside the sandbox's namespace: the fd, or -1 when it did not connect in time. */
int tcp_connect(const char *ns, const char *ip, int port, int timeout_ms);
int can_connect(const char *ns, const char *ip, int port);
/* Sends one UDP datagram from the sandbox; true when the receiving socket got it. */
int udp_reaches(const char *from_ns, const char *ip, int port, int rx);
/* One ICMP echo from the sandbox (a ping socket, as an unprivileged user inside would use). */
int ping_answers(const char *ns, const char *ip);
int echo_ok(int s, const char *msg);
/* whether the web servers' last connection carried needle in its first bytes (then forgotten) */
int head_had(const char *needle, size_t len);
/* node namespace + private mounts; the uplink namespace behind veth up0 with the outside addresses */
void node_setup(void);
void net_start(int pool);
cn_policy policy(bool internet, const char *allow, const char *deny);
void lease(const char *name, cn_policy p, cn_lease_info *li);
/* An A query from inside the sandbox to server (any address: the node's resolver answers for it). Returns the
 * rcode, the addresses in addrs[*n]; -1 when no answer came from server:53. */
int resolve(const char *ns, const char *server, const char *name, uint32_t *addrs, int *n);
/* errno of a TCP connect from the sandbox (0: connected), ETIMEDOUT when nothing answered in timeout_ms */
int connect_errno(const char *ns, const char *ip, int port, int timeout_ms);
int http_ok(const char *ns, const char *ip, const char *host);
/* A real TLS ClientHello (OpenSSL's, server name sni) sent to ip:443 */
int tls_ok(const char *ns, const char *ip, const char *sni);

#endif
