/* The web console: static files embedded at build time (cmake/embed_console.cmake), served under /console/
 * on the API's own port (same origin as the REST API it drives). */
#ifndef CUBE_API_CONSOLE_H
#define CUBE_API_CONSOLE_H

#include "http.h"

typedef struct console_asset {
    const char *path; /* under /console/, e.g. "app.js" */
    const char *content_type;
    const char *data, *end;
} console_asset;

/* ends with a zeroed entry */
extern const console_asset console_assets[];

/* GET /console and /console/...: the files; /console/config.json: where the console reaches sandboxes. */
void api_console(void *svc, http_req *req);

#endif
