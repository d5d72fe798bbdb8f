/* /console: the operators' and users' web console (console/ in the repository). Every file is embedded in
 * the binary, so a cube-api is the whole console: no file to find at run time, no extra service. */
#include "console.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

/* The console's page may talk to this origin (the REST API) and to cube-proxy for the sandboxes' envd; it
 * runs no inline script and is framed by nobody. xterm.js sets inline styles. */
#define CONSOLE_CSP                                                                                          \
    "default-src 'self'; script-src 'self'; connect-src 'self' http: https:; img-src 'self' data: blob:; "   \
    "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

static const console_asset *find_asset(const char *path)
{
    for (const console_asset *f = console_assets; f->path; f++)
        if (strcmp(f->path, path) == 0) return f;
    return NULL;
}

static void reply_file(http_req *req, const char *type, void *data, size_t len,
                       enum MHD_ResponseMemoryMode mode, const char *cache)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, data, mode);
    if (!r) return http_reply_error(req, 500, "out of memory");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, "Content-Security-Policy", CONSOLE_CSP);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, cache);
    http_reply(req, 200, r);
}

/* Where the page reaches the sandboxes (cube-proxy, E2B_SANDBOX_URL), and whether this build has the
 * terminal's xterm.js. */
static void config_json(api *a, http_req *req)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "sandboxUrl", a->console_sandbox_url);
    cJSON_AddBoolToObject(o, "terminal", find_asset("vendor/xterm.js") != NULL);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s) return http_reply_error(req, 500, "out of memory");
    reply_file(req, "application/json", s, strlen(s), MHD_RESPMEM_MUST_FREE, "no-store");
}

void api_console(void *svc, http_req *req)
{
    api *a = svc;
    if (strcmp(req->url, "/console") == 0) { /* relative paths in the page need the slash */
        struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        if (!r) return http_reply_error(req, 500, "out of memory");
        MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, "/console/");
        return http_reply(req, 308, r);
    }
    const char *path = req->url + strlen("/console/");
    if (strcmp(path, "config.json") == 0) return config_json(a, req);
    const console_asset *f = find_asset(*path ? path : "index.html");
    if (!f) return http_reply_error(req, 404, "no such console page: %s", req->url);
    /* the page itself always fresh (it names the scripts); the scripts change only with the binary */
    reply_file(req, f->content_type, (void *)f->data, (size_t)(f->end - f->data), MHD_RESPMEM_PERSISTENT,
               *path && strcmp(path, "index.html") != 0 ? "max-age=300" : "no-store");
}
