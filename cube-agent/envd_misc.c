/* envd's plain HTTP endpoints besides /files: /health, /init, /envs, /metrics. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "agent.h"
#include "ca_paths.h"
#include "json.h"
#include "log.h"
#include "timeutil.h"

void envd_health(agent *a, http_req *req);
void envd_init(agent *a, http_req *req);
void envd_envs(agent *a, http_req *req);
void envd_metrics(agent *a, http_req *req);

void envd_health(agent *a, http_req *req)
{
    (void)a;
    http_reply_empty(req, 204);
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* POST /init from the node agent: env vars, access token, default user and workdir. Exempt from the token
 * check the first time; once a token is set, a change needs the current token. */
/* The node's egress CA into the sandbox's trust: a file of its own (where update-ca-certificates looks) and
 * the system bundle (what OpenSSL, curl and Python read), once. */
static int agent_trust_ca(const char *pem, cube_err *err)
{
    /* any template: the directories may not exist yet */
    static const char *const dirs[] = {"/usr", "/usr/local", "/usr/local/share",
                                       "/usr/local/share/ca-certificates"};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
        if (mkdir(dirs[i], 0755) < 0 && errno != EEXIST) return cube_err_sys(err, errno, "mkdir %s", dirs[i]);
    FILE *f = fopen(CA_CUBE_FILE, "we");
    if (!f || fputs(pem, f) < 0 || fclose(f) != 0) {
        if (f) fclose(f);
        return cube_err_sys(err, errno, "write %s", CA_CUBE_FILE);
    }
    f = fopen(CA_SYSTEM_BUNDLE, "re");
    if (!f) return 0; /* a template without a bundle: the file above and the variables still tell */
    char line[128];
    bool have = false;
    /* the bundle holds it already (a re-init): its first base64 line is enough to tell */
    const char *first = strchr(pem, '\n');
    char mark[80] = "";
    if (first) snprintf(mark, sizeof(mark), "%.64s", first + 1);
    while (!have && *mark && fgets(line, sizeof(line), f)) have = strncmp(line, mark, strlen(mark)) == 0;
    fclose(f);
    if (have) return 0;
    f = fopen(CA_SYSTEM_BUNDLE, "ae");
    if (!f || fputs("\n# cube egress CA\n", f) < 0 || fputs(pem, f) < 0 || fclose(f) != 0) {
        if (f) fclose(f);
        return cube_err_sys(err, errno, "append to %s", CA_SYSTEM_BUNDLE);
    }
    return 0;
}

void envd_init(agent *a, http_req *req)
{
    cube_err err = {0};
    cJSON *in = req->body_len ? cube_json_parse(req->body, req->body_len, &err) : cJSON_CreateObject();
    if (!in || !cJSON_IsObject(in)) {
        cJSON_Delete(in);
        http_reply_error(req, 400, "%s", in ? "body must be a JSON object" : err.msg);
        return;
    }
    const cJSON *vars = cJSON_GetObjectItemCaseSensitive(in, "envVars");
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(in, "accessToken");
    const cJSON *user = cJSON_GetObjectItemCaseSensitive(in, "defaultUser");
    const cJSON *wd = cJSON_GetObjectItemCaseSensitive(in, "defaultWorkdir");
    /* cube's own field: a pooled sandbox takes its E2B id as hostname when it is claimed */
    const cJSON *host = cJSON_GetObjectItemCaseSensitive(in, "hostname");
    /* cube's own field: the node's egress CA, for the sandbox's trust store */
    const cJSON *ca = cJSON_GetObjectItemCaseSensitive(in, "caCerts");
    if ((vars && !cJSON_IsNull(vars) &&
         (!cJSON_IsObject(vars) || cube_json_check_string_map(vars, "envVars", &err) < 0)) ||
        (tok && !cJSON_IsNull(tok) && !cJSON_IsString(tok)) ||
        (user && !cJSON_IsNull(user) && !cJSON_IsString(user)) ||
        (wd && !cJSON_IsNull(wd) && !cJSON_IsString(wd)) ||
        (ca && !cJSON_IsNull(ca) &&
         (!cJSON_IsString(ca) || strlen(ca->valuestring) > 16384 ||
          strncmp(ca->valuestring, "-----BEGIN CERTIFICATE-----", 27) != 0))) {
        cJSON_Delete(in);
        http_reply_error(req, 400,
                         "envVars must map strings to strings; accessToken, defaultUser, defaultWorkdir "
                         "strings; caCerts PEM "
                         "certificates");
        return;
    }
    if (cJSON_IsString(host)) {
        const char *h = host->valuestring;
        size_t hl = strlen(h);
        int ok = hl > 0 && hl <= 63;
        for (const char *c = h; *c && ok; c++)
            ok = (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-';
        if (!ok) {
            cJSON_Delete(in);
            http_reply_error(req, 400, "hostname must be 1-63 chars of [a-z0-9-]");
            return;
        }
        /* only as PID 1 of a sandbox, whose UTS namespace it owns: never the hostname of a machine */
        if (getpid() == 1 && sethostname(h, hl) < 0) {
            cJSON_Delete(in);
            http_reply_error(req, 500, "sethostname: %s", strerror(errno));
            return;
        }
    }
    if (cJSON_IsString(user)) {
        agent_user u;
        if (agent_lookup_user(user->valuestring, &u, &err) < 0) {
            cJSON_Delete(in);
            http_reply_error(req, 400, "%s", err.msg);
            return;
        }
    }
    pthread_mutex_lock(&a->lock);
    if (a->access_token && !agent_token_ok_locked(a, req)) {
        pthread_mutex_unlock(&a->lock);
        cJSON_Delete(in);
        http_reply_error(req, 401, "the access token is already set; re-init needs it");
        return;
    }
    /* only as PID 1 of a sandbox: its own files, never a machine's trust store. A template it cannot be put
     * into (a read-only /usr, say) still starts: its HTTPS to names with header rules then fails, and
     * cube-net says why */
    if (cJSON_IsString(ca) && getpid() == 1 && agent_trust_ca(ca->valuestring, &err) < 0)
        cube_log_warn("egress CA not trusted", "err=\"%s\"", err.msg);
    if (cJSON_IsString(ca) && getpid() == 1) /* for what reads no system store: Node, Python's requests */
        for (size_t i = 0; i < sizeof(cube_ca_env) / sizeof(cube_ca_env[0]); i++)
            if (!cJSON_GetObjectItemCaseSensitive(a->env_vars, cube_ca_env[i][0]))
                cJSON_AddStringToObject(a->env_vars, cube_ca_env[i][0], cube_ca_env[i][1]);
    if (cJSON_IsObject(vars)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, vars)
        {
            cJSON_DeleteItemFromObjectCaseSensitive(a->env_vars, it->string);
            cJSON_AddStringToObject(a->env_vars, it->string, it->valuestring);
        }
    }
    if (cJSON_IsString(tok)) {
        free(a->access_token);
        a->access_token = *tok->valuestring ? strdup(tok->valuestring) : NULL;
    }
    if (cJSON_IsString(user)) {
        free(a->default_user);
        a->default_user = strdup(user->valuestring);
    }
    if (cJSON_IsString(wd)) {
        free(a->default_workdir);
        a->default_workdir = dup_or_null(*wd->valuestring ? wd->valuestring : NULL);
    }
    pthread_mutex_unlock(&a->lock);
    cJSON_Delete(in);
    struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, "X-Envd-Version", ENVD_VERSION);
    http_reply(req, 204, r);
}

void envd_envs(agent *a, http_req *req)
{
    if (!agent_token_ok(a, req)) {
        http_reply_error(req, 401, "missing or invalid access token");
        return;
    }
    pthread_mutex_lock(&a->lock);
    char *s = cJSON_PrintUnformatted(a->env_vars);
    pthread_mutex_unlock(&a->lock);
    http_reply_json(req, 200, s ? s : "{}");
    free(s);
}

static long long meminfo(const char *key)
{
    FILE *f = fopen("/proc/meminfo", "re");
    if (!f) return 0;
    char line[256];
    long long v = 0;
    size_t kl = strlen(key);
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') v = strtoll(line + kl + 1, NULL, 10) * 1024;
    fclose(f);
    return v;
}

/* cpu time of the whole system from /proc/stat: busy and total jiffies */
static void cpu_sample(unsigned long long *busy, unsigned long long *total)
{
    *busy = *total = 0;
    FILE *f = fopen("/proc/stat", "re");
    if (!f) return;
    unsigned long long v[8] = {0};
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
               &v[6], &v[7]) == 8) {
        for (int i = 0; i < 8; i++) *total += v[i];
        *busy = *total - v[3] - v[4];
    }
    fclose(f);
}

void envd_metrics(agent *a, http_req *req)
{
    if (!agent_token_ok(a, req)) {
        http_reply_error(req, 401, "missing or invalid access token");
        return;
    }
    unsigned long long b0, t0, b1, t1;
    cpu_sample(&b0, &t0);
    usleep(100 * 1000); /* a short window; E2B's envd samples the same way */
    cpu_sample(&b1, &t1);
    double pct = t1 > t0 ? 100.0 * (double)(b1 - b0) / (double)(t1 - t0) : 0;
    long long total = meminfo("MemTotal"), avail = meminfo("MemAvailable"), cached = meminfo("Cached");
    struct statvfs vfs;
    unsigned long long dtotal = 0, dused = 0;
    if (statvfs("/", &vfs) == 0) {
        dtotal = (unsigned long long)vfs.f_blocks * vfs.f_frsize;
        dused = dtotal - (unsigned long long)vfs.f_bfree * vfs.f_frsize;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "ts", (double)(cube_now_unix_ms() / 1000));
    cJSON_AddNumberToObject(o, "cpu_count", (double)sysconf(_SC_NPROCESSORS_ONLN));
    cJSON_AddNumberToObject(o, "cpu_used_pct", (double)(long long)(pct * 100) / 100.0);
    cJSON_AddNumberToObject(o, "mem_total", (double)total);
    cJSON_AddNumberToObject(o, "mem_used", (double)(total - avail));
    cJSON_AddNumberToObject(o, "mem_cache", (double)cached);
    cJSON_AddNumberToObject(o, "mem_total_mib", (double)(total >> 20));
    cJSON_AddNumberToObject(o, "mem_used_mib", (double)((total - avail) >> 20));
    cJSON_AddNumberToObject(o, "disk_used", (double)dused);
    cJSON_AddNumberToObject(o, "disk_total", (double)dtotal);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    http_reply_json(req, 200, s);
    free(s);
}
