/* Pulling an image from a registry (see registry.h), with libcurl. */
#include "registry.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#define MANIFEST_MAX  (4u << 20)
#define BLOB_MAX      (8ull << 30)
#define CONNECT_S     15L
#define UNPACK_FACTOR 4.0 /* a layer's bytes on disk, compressed blob and unpacked, per byte pulled */
#define SPACE_RESERVE (1024.0 * 1e6) /* left free on the node after a pull: its sandboxes still write */
#define STALL_S       60L            /* a transfer slower than 1 KiB/s this long is given up */
#define ACCEPT_MANIFEST                                                                                      \
    "Accept: application/vnd.oci.image.index.v1+json, "                                                      \
    "application/vnd.docker.distribution.manifest.list.v2+json, "                                            \
    "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"

static bool is_digest(const char *s)
{
    if (strncmp(s, "sha256:", 7) != 0 || strlen(s) != 7 + 64) return false;
    for (s += 7; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f'))) return false;
    return true;
}

/* localhost, 127.0.0.0/8 or [::1], with or without a port: spoken to in plain http (a registry on the node
 * itself, as tests and local mirrors run one); every other host is https. */
static bool is_loopback(const char *host)
{
    char h[256];
    snprintf(h, sizeof(h), "%s", host);
    char *colon = strrchr(h, ':');
    if (strncmp(h, "[::1]", 5) == 0) return h[5] == '\0' || h[5] == ':';
    if (colon) *colon = '\0';
    if (strcmp(h, "localhost") == 0) return true;
    struct in_addr a;
    return inet_pton(AF_INET, h, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

int reg_parse(const char *name, reg_image *out, cube_err *err)
{
    memset(out, 0, sizeof(*out));
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > 700) return cube_err_set(err, EINVAL, "fromImage: an image name is required");
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr("._-/:@", *p)))
            return cube_err_set(err, EINVAL, "fromImage: '%s' is not an image name", name);
    char buf[720];
    snprintf(buf, sizeof(buf), "%s", name);
    char *rest = buf, *slash = strchr(buf, '/');
    /* a first part with '.' or ':' or "localhost" names the registry; else Docker Hub */
    if (slash && (memchr(buf, '.', (size_t)(slash - buf)) || memchr(buf, ':', (size_t)(slash - buf)) ||
                  strncmp(buf, "localhost/", 10) == 0 || strncmp(buf, "localhost:", 10) == 0)) {
        *slash = '\0';
        snprintf(out->host, sizeof(out->host), "%s", buf);
        rest = slash + 1;
    } else {
        snprintf(out->host, sizeof(out->host), "registry-1.docker.io");
    }
    char *at = strchr(rest, '@');
    if (at) {
        *at = '\0';
        if (!is_digest(at + 1)) return cube_err_set(err, EINVAL, "fromImage: '%s': a bad digest", name);
        snprintf(out->ref, sizeof(out->ref), "%s", at + 1);
    } else {
        char *colon = strrchr(rest, ':');
        if (colon && !strchr(colon, '/')) {
            *colon = '\0';
            snprintf(out->ref, sizeof(out->ref), "%s", colon + 1);
        } else {
            snprintf(out->ref, sizeof(out->ref), "latest");
        }
    }
    if (!*rest || !*out->ref || rest[0] == '/' || strstr(rest, "//") || strstr(rest, "..") ||
        strstr(out->host, "..") || out->host[0] == '.' || out->host[0] == '-' || out->host[0] == ':')
        return cube_err_set(err, EINVAL, "fromImage: '%s' is not an image name", name);
    if (strcmp(out->host, "registry-1.docker.io") == 0 && !strchr(rest, '/'))
        snprintf(out->repo, sizeof(out->repo), "library/%s", rest);
    else
        snprintf(out->repo, sizeof(out->repo), "%s", rest);
    for (char *p = out->repo; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            return cube_err_set(err, EINVAL, "fromImage: '%s': repository names are lower case", name);
    out->plain = is_loopback(out->host);
    return 0;
}

/* ---- HTTP ---- */

typedef struct client {
    const reg_image *img;
    const reg_pull *p;
    char auth[8192]; /* "Authorization: ..." once the registry asked for it */
} client;

typedef struct sink {
    char *buf; /* a body kept in memory (manifests, tokens), or NULL */
    size_t len, cap;
    int fd;           /* a blob written to a file, or -1 */
    EVP_MD_CTX *hash; /* over what arrives */
    uint64_t total;
    uint64_t limit; /* a blob: the size its manifest declares (0: BLOB_MAX) */
    bool too_big;
    char www_auth[1024];
    client *cl;
} sink;

static size_t on_body(char *data, size_t sz, size_t nm, void *arg)
{
    sink *s = arg;
    size_t n = sz * nm;
    s->total += n;
    if (s->total > (s->fd < 0 ? MANIFEST_MAX : s->limit ? s->limit : BLOB_MAX)) {
        s->too_big = true;
        return 0;
    }
    if (s->hash) EVP_DigestUpdate(s->hash, data, n);
    if (s->fd >= 0) {
        for (size_t off = 0; off < n;) {
            ssize_t w = write(s->fd, data + off, n - off);
            if (w <= 0) return 0;
            off += (size_t)w;
        }
        return n;
    }
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + n + 1) cap *= 2;
        char *nb = realloc(s->buf, cap);
        if (!nb) return 0;
        s->buf = nb;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, data, n);
    s->len += n;
    s->buf[s->len] = '\0';
    return n;
}

static size_t on_header(char *data, size_t sz, size_t nm, void *arg)
{
    sink *s = arg;
    size_t n = sz * nm;
    if (n > 18 && strncasecmp(data, "WWW-Authenticate:", 17) == 0) {
        const char *v = data + 17;
        while (*v == ' ') v++;
        size_t len = n - (size_t)(v - data);
        while (len && (v[len - 1] == '\r' || v[len - 1] == '\n')) len--;
        snprintf(s->www_auth, sizeof(s->www_auth), "%.*s", (int)len, v);
    }
    return n;
}

static int on_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    (void)a, (void)b, (void)c, (void)d;
    sink *s = arg;
    return s->cl->p->cancelled && s->cl->p->cancelled(s->cl->p->arg) ? 1 : 0;
}

/* One GET; the status, or -1 (err) when there was no answer. basic: the user's credentials as basic auth
 * (the token endpoint). */
static long get(client *cl, const char *url, const char *accept, sink *s, bool basic, cube_err *err)
{
    CURL *h = curl_easy_init();
    if (!h) return cube_err_set(err, ENOMEM, "out of memory");
    struct curl_slist *hd = NULL;
    if (accept) hd = curl_slist_append(hd, accept);
    if (*cl->auth && !basic) hd = curl_slist_append(hd, cl->auth);
    s->cl = cl;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION,
                     1L); /* blobs move to storage hosts (no Authorization there) */
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, CONNECT_S);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, STALL_S);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "cube-build/1");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, s);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, s);
    if (basic && cl->p->username) {
        curl_easy_setopt(h, CURLOPT_USERNAME, cl->p->username);
        curl_easy_setopt(h, CURLOPT_PASSWORD, cl->p->password ? cl->p->password : "");
    }
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hd);
    curl_easy_cleanup(h);
    if (s->too_big) return cube_err_set(err, EFBIG, "%s: the answer is too large", url);
    if (rc == CURLE_ABORTED_BY_CALLBACK) return cube_err_set(err, ECANCELED, "the build was stopped");
    if (rc != CURLE_OK)
        return cube_err_set(err, EHOSTUNREACH, "registry %s: %s", cl->img->host, curl_easy_strerror(rc));
    return status;
}

void reg_challenge_param(const char *h, const char *name, char *out, size_t cap)
{
    *out = '\0';
    char key[64];
    snprintf(key, sizeof(key), "%s=\"", name);
    const char *p = strcasestr(h, key);
    if (!p) return;
    p += strlen(key);
    const char *e = strchr(p, '"');
    if (e) snprintf(out, cap, "%.*s", (int)(e - p), p);
}

/* Answers the registry's challenge: a bearer token from its realm, or basic auth with the credentials. */
static int authenticate(client *cl, const char *challenge, cube_err *err)
{
    if (strncasecmp(challenge, "Basic", 5) == 0) {
        if (!cl->p->username)
            return cube_err_set(err, EACCES,
                                "registry %s asks for credentials: give fromImage's username and password",
                                cl->img->host);
        char up[1024], b64[1400];
        int n = snprintf(up, sizeof(up), "%s:%s", cl->p->username, cl->p->password ? cl->p->password : "");
        EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)up, n);
        snprintf(cl->auth, sizeof(cl->auth), "Authorization: Basic %s", b64);
        return 0;
    }
    if (strncasecmp(challenge, "Bearer", 6) != 0)
        return cube_err_set(err, EPROTO, "registry %s asks for an authentication cube does not speak: %s",
                            cl->img->host, challenge);
    char realm[512], service[256], scope[512];
    reg_challenge_param(challenge, "realm", realm, sizeof(realm));
    reg_challenge_param(challenge, "service", service, sizeof(service));
    reg_challenge_param(challenge, "scope", scope, sizeof(scope));
    if (!*realm)
        return cube_err_set(err, EPROTO, "registry %s: a token challenge without a realm", cl->img->host);
    if (!*scope) snprintf(scope, sizeof(scope), "repository:%s:pull", cl->img->repo);
    CURL *esc = curl_easy_init();
    char *es = esc ? curl_easy_escape(esc, service, 0) : NULL,
         *eo = esc ? curl_easy_escape(esc, scope, 0) : NULL;
    char url[2048];
    snprintf(url, sizeof(url), "%s%sservice=%s&scope=%s", realm, strchr(realm, '?') ? "&" : "?", es ? es : "",
             eo ? eo : "");
    curl_free(es);
    curl_free(eo);
    if (esc) curl_easy_cleanup(esc);
    sink s = {.fd = -1};
    long st = get(cl, url, NULL, &s, true, err);
    int rc = 0;
    if (st < 0) {
        rc = -1;
    } else if (st == 401 || st == 403) {
        rc = cube_err_set(err, EACCES, "registry %s refused %s for %s (wrong username or password?)",
                          cl->img->host, cl->p->username ? "the credentials" : "anonymous access",
                          cl->img->repo);
    } else if (st != 200) {
        rc = cube_err_set(err, EPROTO, "registry %s: its token service answered %ld", cl->img->host, st);
    } else {
        cJSON *j = cJSON_Parse(s.buf ? s.buf : "");
        const char *tok = cJSON_GetStringValue(cJSON_GetObjectItem(j, "token"));
        if (!tok) tok = cJSON_GetStringValue(cJSON_GetObjectItem(j, "access_token"));
        if (!tok || strlen(tok) > sizeof(cl->auth) - 40)
            rc = cube_err_set(err, EPROTO, "registry %s: its token service sent no usable token",
                              cl->img->host);
        else
            snprintf(cl->auth, sizeof(cl->auth), "Authorization: Bearer %s", tok);
        cJSON_Delete(j);
    }
    free(s.buf);
    return rc;
}

/* GET with the registry's authentication: a 401 is answered once. The status, or -1. */
static long get_authed(client *cl, const char *path, const char *accept, sink *s, cube_err *err)
{
    char url[2048];
    snprintf(url, sizeof(url), "%s://%s/v2/%s/%s", cl->img->plain ? "http" : "https", cl->img->host,
             cl->img->repo, path);
    for (int attempt = 0;; attempt++) {
        s->www_auth[0] = '\0';
        long st = get(cl, url, accept, s, false, err);
        if (st != 401 || attempt > 0 || !*s->www_auth) {
            if (st == 401 || st == 403)
                return cube_err_set(err, EACCES,
                                    "registry %s refused access to %s (wrong username or password?)",
                                    cl->img->host, cl->img->repo);
            return st;
        }
        if (authenticate(cl, s->www_auth, err) < 0) return -1;
        /* the body of the 401 is dropped, the file (if any) started over */
        s->len = 0;
        s->total = 0;
        if (s->fd >= 0 && (ftruncate(s->fd, 0) < 0 || lseek(s->fd, 0, SEEK_SET) < 0))
            return cube_err_sys(err, errno, "truncate a download");
        if (s->hash) EVP_DigestInit_ex(s->hash, EVP_sha256(), NULL);
    }
}

static void hex_digest(EVP_MD_CTX *h, char out[80])
{
    unsigned char md[32];
    unsigned int n = 0;
    EVP_DigestFinal_ex(h, md, &n);
    strcpy(out, "sha256:");
    for (unsigned i = 0; i < n; i++) snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
}

static const char *platform_arch(void)
{
    struct utsname u;
    if (uname(&u) == 0 && strcmp(u.machine, "aarch64") == 0) return "arm64";
    return "amd64";
}

/* The image manifest for this platform: its body and digest (an index or list is followed once). */
int reg_pick_platform(const char *json, size_t len, const char *arch, char digest[80])
{
    *digest = '\0';
    cJSON *j = json ? cJSON_ParseWithLength(json, len) : NULL;
    const cJSON *list = cJSON_GetObjectItem(j, "manifests"), *m;
    if (!cJSON_IsArray(list)) {
        cJSON_Delete(j);
        return 0;
    }
    cJSON_ArrayForEach(m, list)
    {
        const cJSON *pl = cJSON_GetObjectItem(m, "platform");
        const char *os = cJSON_GetStringValue(cJSON_GetObjectItem(pl, "os"));
        const char *a = cJSON_GetStringValue(cJSON_GetObjectItem(pl, "architecture"));
        const char *d = cJSON_GetStringValue(cJSON_GetObjectItem(m, "digest"));
        if (os && a && d && strcmp(os, "linux") == 0 && strcmp(a, arch) == 0 && is_digest(d)) {
            snprintf(digest, 80, "%s", d);
            break;
        }
    }
    cJSON_Delete(j);
    return *digest ? 1 : -1;
}

static int fetch_manifest(client *cl, const char *ref, char **body, size_t *len, char digest[80],
                          cube_err *err)
{
    char next[80]; /* an index's pick: fetched on the next round (outlives the round) */
    for (int depth = 0; depth < 2; depth++) {
        char path[400];
        snprintf(path, sizeof(path), "manifests/%s", ref);
        sink s = {.fd = -1, .hash = EVP_MD_CTX_new()};
        EVP_DigestInit_ex(s.hash, EVP_sha256(), NULL);
        long st = get_authed(cl, path, ACCEPT_MANIFEST, &s, err);
        hex_digest(s.hash, digest);
        EVP_MD_CTX_free(s.hash);
        if (st < 0 || st != 200) {
            free(s.buf);
            if (st == 404)
                return cube_err_set(err, ENOENT, "image %s/%s:%s not found", cl->img->host, cl->img->repo,
                                    ref);
            return st < 0 ? -1
                          : cube_err_set(err, EPROTO, "registry %s answered %ld for %s", cl->img->host, st,
                                         path);
        }
        if (is_digest(ref) && strcmp(ref, digest) != 0) {
            free(s.buf);
            return cube_err_set(err, EBADMSG, "registry %s sent a manifest that is not %s", cl->img->host,
                                ref);
        }
        const char *arch = platform_arch();
        int picked = reg_pick_platform(s.buf, s.len, arch, next);
        if (picked == 0) {
            if (!s.buf) return cube_err_set(err, EPROTO, "registry %s sent an empty manifest", cl->img->host);
            *body = s.buf;
            *len = s.len;
            return 0;
        }
        free(s.buf);
        if (picked < 0)
            return cube_err_set(err, ENOENT, "image %s/%s:%s has no linux/%s variant", cl->img->host,
                                cl->img->repo, ref, arch);
        ref = next;
    }
    return cube_err_set(err, EPROTO, "registry %s: an index inside an index", cl->img->host);
}

int reg_resolve(const reg_image *img, const reg_pull *p, char digest[80], cube_err *err)
{
    client cl = {.img = img, .p = p};
    char *body = NULL;
    size_t len = 0;
    int rc = fetch_manifest(&cl, img->ref, &body, &len, digest, err);
    free(body);
    return rc;
}

static int write_file(const char *path, const char *data, size_t len, cube_err *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return cube_err_sys(err, errno, "create %s", path);
    bool ok = write(fd, data, len) == (ssize_t)len;
    if (close(fd) < 0) ok = false;
    return ok ? 0 : cube_err_sys(err, errno ? errno : EIO, "write %s", path);
}

/* A blob into blobs/sha256/<hex>, checked against its digest. */
static int fetch_blob(client *cl, const char *layout, const cJSON *desc, cube_err *err)
{
    const char *digest = cJSON_GetStringValue(cJSON_GetObjectItem(desc, "digest"));
    const cJSON *size = cJSON_GetObjectItem(desc, "size");
    if (!digest) digest = "";
    if (!is_digest(digest)) return cube_err_set(err, EPROTO, "registry %s: a bad blob digest", cl->img->host);
    char path[4400], part[4500], rel[200];
    snprintf(path, sizeof(path), "%s/blobs/sha256/%s", layout, digest + 7);
    snprintf(part, sizeof(part), "%s.part", path);
    snprintf(rel, sizeof(rel), "blobs/%s", digest);
    int fd = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return cube_err_sys(err, errno, "create %s", part);
    /* no more than the manifest says: a registry cannot fill the node's disk with one blob */
    sink s = {
        .fd = fd, .hash = EVP_MD_CTX_new(), .limit = cJSON_IsNumber(size) ? (uint64_t)size->valuedouble : 0};
    EVP_DigestInit_ex(s.hash, EVP_sha256(), NULL);
    long st = get_authed(cl, rel, NULL, &s, err);
    char got[80];
    hex_digest(s.hash, got);
    EVP_MD_CTX_free(s.hash);
    int rc = close(fd) < 0 ? cube_err_sys(err, errno, "write %s", part) : 0;
    if (st < 0)
        rc = -1;
    else if (st != 200)
        rc = cube_err_set(err, EPROTO, "registry %s answered %ld for blob %s", cl->img->host, st, digest);
    else if (rc == 0 && strcmp(got, digest) != 0)
        rc =
            cube_err_set(err, EBADMSG, "registry %s sent blob %s with digest %s", cl->img->host, digest, got);
    if (rc == 0 && rename(part, path) < 0) rc = cube_err_sys(err, errno, "rename %s", part);
    if (rc < 0) unlink(part);
    return rc;
}

/* The node's disk after the pull: the blobs (their declared sizes) and the template unpacked from them
 * (taken as UNPACK_FACTOR times the compressed size) must leave SPACE_RESERVE free. */
int reg_check_space(const cJSON *manifest, const char *dir, cube_err *err)
{
    const cJSON *layers = cJSON_GetObjectItem(manifest, "layers"), *l;
    double total = 0;
    cJSON_ArrayForEach(l, layers)
    {
        const cJSON *size = cJSON_GetObjectItem(l, "size");
        if (!cJSON_IsNumber(size) || size->valuedouble < 0)
            return cube_err_set(err, EPROTO, "the image's manifest gives a layer without its size");
        total += size->valuedouble;
    }
    struct statvfs vs;
    if (statvfs(dir, &vs) < 0) return cube_err_sys(err, errno, "statvfs %s", dir);
    double free_b = (double)vs.f_bavail * (double)vs.f_frsize, need = total * UNPACK_FACTOR + SPACE_RESERVE;
    if (need > free_b)
        return cube_err_set(
            err, ENOSPC,
            "the image is %.0f MB compressed; pulling and unpacking it needs about %.0f MB and "
            "this node has %.0f MB free",
            total / 1e6, need / 1e6, free_b / 1e6);
    return 0;
}

int reg_fetch(const reg_image *img, const reg_pull *p, const char *digest, const char *layout, cube_err *err)
{
    client cl = {.img = img, .p = p};
    char *body = NULL, got[80], dir[4400];
    size_t len = 0;
    if (fetch_manifest(&cl, digest, &body, &len, got, err) < 0) return -1;
    const char *sub[] = {"", "/blobs", "/blobs/sha256"};
    for (int i = 0; i < 3; i++) {
        snprintf(dir, sizeof(dir), "%s%s", layout, sub[i]);
        if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
            free(body);
            return cube_err_sys(err, errno, "mkdir %s", dir);
        }
    }
    cJSON *m = cJSON_ParseWithLength(body, len);
    const char *media = cJSON_GetStringValue(cJSON_GetObjectItem(m, "mediaType"));
    int rc = 0;
    snprintf(dir, sizeof(dir), "%s/blobs/sha256/%s", layout, got + 7);
    if (write_file(dir, body, len, err) < 0) rc = -1;
    const cJSON *cfg = cJSON_GetObjectItem(m, "config"), *layers = cJSON_GetObjectItem(m, "layers"), *l;
    if (rc == 0 && (!cJSON_IsArray(layers) || !cfg))
        rc = cube_err_set(err, EPROTO, "registry %s: the manifest of %s has no config or layers", img->host,
                          img->repo);
    if (rc == 0) rc = reg_check_space(m, layout, err);
    if (rc == 0) rc = fetch_blob(&cl, layout, cfg, err);
    int i = 0, n = cJSON_GetArraySize(layers);
    const cJSON *to_fetch = rc == 0 ? layers : NULL;
    cJSON_ArrayForEach(l, to_fetch)
    {
        const cJSON *size = cJSON_GetObjectItem(l, "size");
        if (p->log) {
            char line[256];
            snprintf(line, sizeof(line), "Pulling layer %d/%d (%.1f MB)", ++i, n,
                     cJSON_IsNumber(size) ? size->valuedouble / 1e6 : 0.0);
            p->log(p->arg, line);
        }
        if ((rc = fetch_blob(&cl, layout, l, err)) < 0) break;
    }
    if (rc == 0) {
        cJSON *idx = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(idx, "manifests"),
              *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(idx, "schemaVersion", 2);
        cJSON_AddStringToObject(e, "mediaType", media ? media : "application/vnd.oci.image.manifest.v1+json");
        cJSON_AddStringToObject(e, "digest", got);
        cJSON_AddNumberToObject(e, "size", (double)len);
        cJSON_AddItemToArray(arr, e);
        char *text = cJSON_PrintUnformatted(idx);
        cJSON_Delete(idx);
        snprintf(dir, sizeof(dir), "%s/index.json", layout);
        rc = text ? write_file(dir, text, strlen(text), err) : cube_err_set(err, ENOMEM, "out of memory");
        free(text);
        snprintf(dir, sizeof(dir), "%s/oci-layout", layout);
        const char *ol = "{\"imageLayoutVersion\":\"1.0.0\"}";
        if (rc == 0) rc = write_file(dir, ol, strlen(ol), err);
    }
    cJSON_Delete(m);
    free(body);
    return rc;
}
