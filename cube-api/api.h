/* cube-api's core: E2B's REST API over cube-master. Stateless: every answer comes from the master. */
#ifndef CUBE_API_H
#define CUBE_API_H

#include "http.h"
#include "rpc.h"

#include <pthread.h>
#include <stdint.h>

/* Keys cube-master accepted in the last few seconds: most requests then need no AuthKey round trip.
 * A revoked key stops working within API_AUTH_TTL_MS. */
#define API_AUTH_SLOTS  64
#define API_AUTH_TTL_MS 5000
typedef struct api_auth_entry {
    char key[128];
    char key_id[64];
    uint32_t max_sandboxes;
    int64_t expires_ms;
} api_auth_entry;

typedef struct api {
    cube_rpc_failover masters;     /* a cluster's masters: one is asked until it stops answering */
    char domain[256];              /* returned as the sandbox domain when set */
    char console_sandbox_url[256]; /* where the console's page reaches sandboxes (cube-proxy); ":PORT" is
                                    * that port on the host the page came from */
    size_t file_chunk;             /* bytes of an upload a PutBuildFile call carries; 0: FILE_CHUNK */
    pthread_mutex_t auth_lock;
    api_auth_entry auth[API_AUTH_SLOTS];
} api;

extern const http_route api_routes[];
/* The volume content API on a port of its own, a thread per connection (volume_content.c). */
extern const http_route api_volume_routes[];

/* E2B's double-encoded metadata filter ("a%3Db%2520c" as MHD hands it over) into key/value pairs. Returns the
 * number of pairs (<= max) or -1 when malformed. Exposed for tests. */
int api_parse_metadata_filter(const char *q, char keys[][128], char values[][256], int max);

#endif
