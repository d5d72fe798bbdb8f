/* cube-api's core: E2B's REST API over cube-master. Stateless: every answer comes from the master. */
#ifndef CUBE_API_H
#define CUBE_API_H

#include "http.h"
#include "rpc.h"

typedef struct api {
    cube_rpc_client *master;
    char domain[256]; /* returned as the sandbox domain when set */
} api;

extern const http_route api_routes[];

/* E2B's double-encoded metadata filter ("a%3Db%2520c" as MHD hands it over) into key/value pairs. Returns the
 * number of pairs (<= max) or -1 when malformed. Exposed for tests. */
int api_parse_metadata_filter(const char *q, char keys[][128], char values[][256], int max);

#endif
