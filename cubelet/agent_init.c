/* What cubelet tells a sandbox's agent when it hands the sandbox out (/init), and the node's egress CA it
 * gives pooled sandboxes ahead of that (cubelet_internal.h). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca_paths.h"
#include "cubelet_internal.h"
#include "netns.h"

/* The node's egress CA (cube-net keeps it under <data>/net/ca): sandboxes trust it, so that header rules
 * can be applied to their HTTPS. Read once it exists; a node without one (no uplink) sends none. */
const char *cl_egress_ca(cubelet *c)
{
    pthread_mutex_lock(&c->lock);
    if (!c->egress_ca_pem) {
        char path[4200], pem[8192];
        snprintf(path, sizeof(path), "%s/net/ca/ca.pem", c->cfg.data_dir);
        FILE *f = fopen(path, "re");
        size_t n = f ? fread(pem, 1, sizeof(pem) - 1, f) : 0;
        if (f) fclose(f);
        pem[n] = '\0';
        if (n && strstr(pem, "-----END CERTIFICATE-----")) c->egress_ca_pem = strdup(pem);
    }
    const char *pem = c->egress_ca_pem;
    pthread_mutex_unlock(&c->lock);
    return pem;
}

static char *ca_body(const char *pem)
{
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "caCerts", pem);
    char *json = cJSON_PrintUnformatted(b);
    cJSON_Delete(b);
    return json;
}

void cl_slot_trust_ca(cubelet *c, cl_slot *s)
{
    const char *ca = cl_egress_ca(c);
    if (!ca || s->agent_fd < 0 || s->ca_trusted) return;
    char *json = ca_body(ca), resp[256];
    int status = 0;
    cube_err err = {0};
    /* the pool's connection is spent on it: another is made for the claim */
    int rc =
        json ? cube_netns_http_on(s->agent_fd, "POST", "/init", json, &status, resp, sizeof(resp), 5000, &err)
             : -1;
    free(json);
    s->ca_trusted = rc == 0 && status == 204;
    s->agent_fd = cube_netns_connect(s->netns, ENVD_PORT, &err);
}

/* The agent's /init: env vars, the access token, the default user and workdir of E2B templates, the node's
 * egress CA (unless the pool gave it already). */
int cl_init_agent(cubelet *c, cl_slot *s, const Cube__NodeCreateRequest *req, cube_err *err)
{
    cJSON *body = cJSON_CreateObject();
    const char *ca = s->ca_trusted ? NULL : cl_egress_ca(c);
    if (ca) cJSON_AddStringToObject(body, "caCerts", ca);
    cJSON *vars = s->tpl->env_json ? cJSON_Parse(s->tpl->env_json) : NULL;
    if (!vars) vars = cJSON_CreateObject();
    /* the CA came in a layer, so the agent never heard of it: what reads no system store is told here, as
     * the agent tells it when /init brings the CA (the template's and the request's own values win) */
    for (size_t i = 0; s->ca_layer && i < sizeof(cube_ca_env) / sizeof(cube_ca_env[0]); i++)
        if (!cJSON_GetObjectItemCaseSensitive(vars, cube_ca_env[i][0]))
            cJSON_AddStringToObject(vars, cube_ca_env[i][0], cube_ca_env[i][1]);
    cJSON_AddItemToObject(body, "envVars", vars);
    for (size_t i = 0; i < req->n_env_vars; i++)
        cJSON_DeleteItemFromObjectCaseSensitive(vars, req->env_vars[i]->key);
    for (size_t i = 0; i < req->n_env_vars; i++)
        cJSON_AddStringToObject(vars, req->env_vars[i]->key, req->env_vars[i]->value);
    if (req->envd_access_token && *req->envd_access_token)
        cJSON_AddStringToObject(body, "accessToken", req->envd_access_token);
    cJSON_AddStringToObject(body, "hostname", req->sandbox_id);
    cJSON_AddStringToObject(body, "defaultUser", s->tpl->user);
    cJSON_AddStringToObject(body, "defaultWorkdir", s->tpl->workdir);
    char *json = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    int status = 0;
    char resp[512];
    int rc = -1;
    bool fresh = true;
    if (s->agent_fd >= 0) { /* the pool's connection; one found closed is retried on a new one (a request
                             * that may have been served, e.g. timed out, is not sent twice) */
        rc = cube_netns_http_on(s->agent_fd, "POST", "/init", json, &status, resp, sizeof(resp), 5000, err);
        s->agent_fd = -1;
        fresh = rc < 0 && (err->code == ECONNRESET || err->code == EPIPE);
    }
    if (rc < 0 && fresh)
        rc = cube_netns_http(s->netns, ENVD_PORT, "POST", "/init", json, &status, resp, sizeof(resp), 5000,
                             err);
    free(json);
    if (rc < 0) return cube_err_prefix(err, "agent /init");
    if (status != 204) return cube_err_set(err, EIO, "agent /init answered %d: %s", status, resp);
    return 0;
}
