/* Sockets inside another network namespace. A node reaches each sandbox's agent on the sandbox's own
 * loopback: the socket is created inside the sandbox's netns (setns on this thread only, then back), so no
 * interface, address or route has to exist for the control path. */
#ifndef CUBE_NETNS_H
#define CUBE_NETNS_H

#include <stdint.h>

#include "err.h"

/* Connects to 127.0.0.1:port inside the netns at netns_path ("/proc/PID/ns/net"). Returns the fd. */
int cube_netns_connect(const char *netns_path, uint16_t port, cube_err *err);

/* One HTTP/1.0 request inside a netns; the response status in *status and up to cap-1 body bytes in body.
 * For short control calls (agent /init, /health), not for streaming. */
int cube_netns_http(const char *netns_path, uint16_t port, const char *method, const char *path,
                    const char *body, int *status, char *resp_body, size_t cap, int timeout_ms,
                    cube_err *err);
/* The same over a connection made earlier (cube_netns_connect), which it closes. */
int cube_netns_http_on(int fd, const char *method, const char *path, const char *body, int *status,
                       char *resp_body, size_t cap, int timeout_ms, cube_err *err);
/* Whether the len bytes of an HTTP/1.x answer in buf are all of it: its head, and the body its status and
 * Content-Length say (none for 1xx, 204 and 304; without a length, the body ends when the peer closes).
 * The request above returns then, not one wakeup later when the peer's close arrives. */
int cube_http_answer_complete(const char *buf, size_t len);

#endif
