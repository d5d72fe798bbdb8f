/* Malformed requests against a real envd server (in process, loopback, port chosen by the kernel): each gets
 * a clean error and the agent keeps answering. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include "agent.h"
#include "children.h"
#include "testutil.h"

static agent a;
static http_server *srv;
static int port;

static void setup(void)
{
    cube_err err = {0};
    ck_assert_int_eq(children_start(), 0);
    ck_assert_int_eq(agent_init(&a, "root", &err), 0);
    srv = http_server_start("127.0.0.1", 0, envd_routes, &a, &err);
    ck_assert_msg(srv != NULL, "%s", err.msg);
    port = http_server_port(srv);
}

static void teardown(void)
{
    http_server_stop(srv);
}

/* Sends raw bytes, returns the whole response (malloc'd) with Connection: close semantics. */
static char *roundtrip(const void *req, size_t len, size_t *out_len)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(write(fd, req, len), (ssize_t)len);
    shutdown(fd, SHUT_WR);
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap + 1);
    ssize_t r;
    while ((r = read(fd, buf + n, cap - n)) > 0) n += (size_t)r;
    close(fd);
    buf[n] = '\0';
    if (out_len) *out_len = n;
    return buf;
}

static char *post(const char *path, const char *ctype, const void *body, size_t blen, size_t *out_len)
{
    char head[1024];
    int hl = snprintf(
        head, sizeof(head),
        "POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n",
        path, ctype, blen);
    char *req = malloc((size_t)hl + blen);
    memcpy(req, head, (size_t)hl);
    memcpy(req + hl, body, blen);
    char *resp = roundtrip(req, (size_t)hl + blen, out_len);
    free(req);
    return resp;
}

static int status_of(const char *resp)
{
    int st = 0;
    sscanf(resp, "HTTP/1.1 %d", &st);
    return st;
}

static void assert_healthy(void)
{
    const char *req = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    char *resp = roundtrip(req, strlen(req), NULL);
    ck_assert_int_eq(status_of(resp), 204);
    free(resp);
}

START_TEST(stream_envelopes_malformed)
{
    const unsigned char truncated[] = {0, 0, 0, 0, 50, '{', '}'};
    const unsigned char huge[] = {0, 0x7f, 0xff, 0xff, 0xff, '{', '}'};
    const unsigned char header_only[] = {0, 0};
    const unsigned char *cases[] = {truncated, huge, header_only};
    size_t lens[] = {sizeof(truncated), sizeof(huge), sizeof(header_only)};
    for (int i = 0; i < 3; i++) {
        size_t n;
        char *resp = post("/process.Process/Start", "application/connect+json", cases[i], lens[i], &n);
        ck_assert_int_eq(status_of(resp), 200); /* Connect streams carry errors in the end-stream envelope */
        ck_assert_msg(memmem(resp, n, "\"invalid_argument\"", 18) != NULL, "case %d", i);
        free(resp);
    }
    assert_healthy();
}
END_TEST

START_TEST(unary_bad_json)
{
    const char *bodies[] = {"{", "[1,2]", "\"str\"", "{\"process\":", "nul"};
    for (int i = 0; i < 5; i++) {
        char *resp = post("/process.Process/List", "application/json", bodies[i], strlen(bodies[i]), NULL);
        ck_assert_msg(status_of(resp) == 400, "%s", resp);
        ck_assert_ptr_nonnull(strstr(resp, "\"code\":\"invalid_argument\""));
        free(resp);
    }
    const char *no_cmd = "{\"process\":{\"args\":[\"x\"]}}";
    char env[64] = {0, 0, 0, 0, (char)strlen(no_cmd)};
    memcpy(env + 5, no_cmd, strlen(no_cmd));
    size_t n;
    char *resp = post("/process.Process/Start", "application/connect+json", env, 5 + strlen(no_cmd), &n);
    ck_assert_ptr_nonnull(memmem(resp, n, "process.cmd is required", 23));
    free(resp);
    resp = post("/filesystem.Filesystem/Stat", "application/json", "{\"path\":\"/nonexistent/x\"}", 25, NULL);
    ck_assert_int_eq(status_of(resp), 404);
    free(resp);
    resp = post("/filesystem.Filesystem/Nope", "application/json", "{}", 2, NULL);
    ck_assert_int_eq(status_of(resp), 501);
    free(resp);
    assert_healthy();
}
END_TEST

START_TEST(files_bad_paths_and_bodies)
{
    const char *gets[] = {
        "GET /files?path= HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET /files?path=%00etc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET /files?path=/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET /files?path=/no/such/file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET /files?path=/etc/hostname&username=nosuchuser HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    };
    int want[] = {400, 400, 400, 404, 400};
    for (int i = 0; i < 5; i++) {
        char *resp = roundtrip(gets[i], strlen(gets[i]), NULL);
        ck_assert_msg(status_of(resp) == want[i], "case %d: %s", i, resp);
        ck_assert_ptr_nonnull(strstr(resp, "\"message\""));
        free(resp);
    }
    /* a path far longer than PATH_MAX */
    size_t n = 10000;
    char *longreq = malloc(n + 200);
    int off = sprintf(longreq, "GET /files?path=/");
    memset(longreq + off, 'a', n);
    strcpy(longreq + off + n, " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    char *resp = roundtrip(longreq, strlen(longreq), NULL);
    ck_assert_int_ge(status_of(resp), 400);
    ck_assert_int_lt(status_of(resp), 500);
    free(resp);
    free(longreq);
    /* multipart without a boundary, and a Range past the end */
    resp = post("/files?path=/tmp/cube-x", "multipart/form-data", "garbage", 7, NULL);
    ck_assert_int_eq(status_of(resp), 400);
    free(resp);
    const char *range = "GET /files?path=/etc/hostname HTTP/1.1\r\nHost: x\r\nRange: "
                        "bytes=999999-\r\nConnection: close\r\n\r\n";
    resp = roundtrip(range, strlen(range), NULL);
    ck_assert_int_eq(status_of(resp), 416);
    free(resp);
    const char *gz = "not gzip at all";
    char head[512];
    int hl = snprintf(
        head, sizeof(head),
        "POST /files?path=/tmp/cube-gz-test HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: "
        "application/octet-stream\r\nContent-Encoding: gzip\r\nContent-Length: %zu\r\n\r\n%s",
        strlen(gz), gz);
    resp = roundtrip(head, (size_t)hl, NULL);
    ck_assert_int_eq(status_of(resp), 400);
    free(resp);
    unlink("/tmp/cube-gz-test");
    assert_healthy();
}
END_TEST

START_TEST(files_range_and_gzip_upload)
{
    /* an upload, gzip-compressed, with parents created */
    char dir[] = "/tmp/cube-range-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[128], cmd[512];
    snprintf(path, sizeof(path), "%s/a/b/data.txt", dir);
    /* gzip in process: the agent's reaper thread would take a system() child's exit status from system() */
    const char *text = "hello, range world";
    unsigned char gz[256];
    z_stream z = {0};
    ck_assert_int_eq(
        deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = (unsigned char *)text;
    z.avail_in = (unsigned)strlen(text);
    z.next_out = gz;
    z.avail_out = sizeof(gz);
    ck_assert_int_eq(deflate(&z, Z_FINISH), Z_STREAM_END);
    size_t gl = sizeof(gz) - z.avail_out;
    deflateEnd(&z);
    char head[512];
    int hl = snprintf(head, sizeof(head),
                      "POST /files?path=%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: "
                      "application/octet-stream\r\nContent-Encoding: gzip\r\nContent-Length: %zu\r\n\r\n",
                      path, gl);
    char req[1024];
    memcpy(req, head, (size_t)hl);
    memcpy(req + hl, gz, gl);
    char *resp = roundtrip(req, (size_t)hl + gl, NULL);
    ck_assert_msg(status_of(resp) == 200, "%s", resp);
    free(resp);
    /* a byte range of it, and a suffix range */
    snprintf(head, sizeof(head),
             "GET /files?path=%s HTTP/1.1\r\nHost: x\r\nRange: bytes=7-11\r\nConnection: close\r\n\r\n",
             path);
    resp = roundtrip(head, strlen(head), NULL);
    ck_assert_int_eq(status_of(resp), 206);
    ck_assert_msg(strstr(resp, "Content-Range: bytes 7-11/18") != NULL, "%s", resp);
    ck_assert_msg(strstr(resp, "\r\n\r\nrange") != NULL, "%s", resp);
    free(resp);
    snprintf(head, sizeof(head),
             "GET /files?path=%s HTTP/1.1\r\nHost: x\r\nRange: bytes=-5\r\nConnection: close\r\n\r\n", path);
    resp = roundtrip(head, strlen(head), NULL);
    ck_assert_int_eq(status_of(resp), 206);
    ck_assert_ptr_nonnull(strstr(resp, "\r\n\r\nworld"));
    free(resp);
    ck_assert_int_eq(unlink(path), 0);
    snprintf(cmd, sizeof(cmd), "%s/a/b", dir);
    ck_assert_int_eq(rmdir(cmd), 0);
    snprintf(cmd, sizeof(cmd), "%s/a", dir);
    ck_assert_int_eq(rmdir(cmd), 0);
    ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

/* A multipart upload as the SDK sends one (chunked): each part's headers and bytes in chunks of their own, so
 * the post processor sees a part before its data. Each file is written once and listed once. */
START_TEST(files_multipart_lists_each_file_once)
{
    char dir[] = "/tmp/cube-multi-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char body[2048], req[4096], path[2][128];
    size_t bl = 0;
    const char *chunks[8];
    size_t nc = 0;
    char part_head[2][512];
    for (int i = 0; i < 2; i++) {
        snprintf(path[i], sizeof(path[i]), "%s/sub/f%d.txt", dir, i);
        snprintf(part_head[i], sizeof(part_head[i]),
                 "%s--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n",
                 i ? "\r\n" : "", path[i]);
        chunks[nc++] = part_head[i];
        chunks[nc++] = i ? "B" : "A"; /* at most 4 bytes: a first call with none of them */
    }
    chunks[nc++] = "\r\n--XyZ--\r\n";
    for (size_t i = 0; i < nc; i++)
        bl += (size_t)snprintf(body + bl, sizeof(body) - bl, "%zx\r\n%s\r\n", strlen(chunks[i]), chunks[i]);
    bl += (size_t)snprintf(body + bl, sizeof(body) - bl, "0\r\n\r\n");
    int hl = snprintf(req, sizeof(req),
                      "POST /files HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: "
                      "multipart/form-data; boundary=XyZ\r\nTransfer-Encoding: chunked\r\n\r\n%s",
                      body);
    char *resp = roundtrip(req, (size_t)hl, NULL);
    ck_assert_msg(status_of(resp) == 200, "%s", resp);
    char *json = strstr(resp, "\r\n\r\n");
    ck_assert_ptr_nonnull(json);
    cJSON *list = cJSON_Parse(json + 4);
    ck_assert_msg(cJSON_IsArray(list) && cJSON_GetArraySize(list) == 2, "%s", json + 4);
    for (int i = 0; i < 2; i++)
        ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(list, i), "path")->valuestring, path[i]);
    cJSON_Delete(list);
    free(resp);
    for (int i = 0; i < 2; i++) {
        char got[64] = "";
        FILE *f = fopen(path[i], "r");
        ck_assert_ptr_nonnull(f);
        ck_assert_ptr_nonnull(fgets(got, sizeof(got), f));
        fclose(f);
        ck_assert_str_eq(got, i ? "B" : "A");
        ck_assert_int_eq(unlink(path[i]), 0);
    }
    char sub[160];
    snprintf(sub, sizeof(sub), "%s/sub", dir);
    ck_assert_int_eq(rmdir(sub), 0);
    ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

/* metadata headers the SDK would refuse are refused here too, by name; good ones come back with the file */
START_TEST(files_metadata_headers)
{
    char req[4096], longv[1100];
    memset(longv, 'v', sizeof(longv) - 1);
    longv[sizeof(longv) - 1] = '\0';
    const char *bad[] = {"X-Metadata-: empty key", NULL};
    for (int i = 0; i < 2; i++) {
        char h[1200];
        snprintf(h, sizeof(h), "%s", bad[i] ? bad[i] : "X-Metadata-big: ");
        if (!bad[i]) strncat(h, longv, sizeof(h) - strlen(h) - 1);
        int n =
            snprintf(req, sizeof(req),
                     "POST /files?path=/tmp/cube-meta-%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s\r\n"
                     "Content-Type: application/octet-stream\r\nContent-Length: 1\r\n\r\nx",
                     getpid(), h);
        char *resp = roundtrip(req, (size_t)n, NULL);
        ck_assert_msg(status_of(resp) == 400 && strstr(resp, "X-Metadata-"), "%s", resp);
        free(resp);
    }
    int n = snprintf(
        req, sizeof(req),
        "POST /files?path=/tmp/cube-meta-%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        "X-Metadata-Owner: alice\r\nContent-Type: application/octet-stream\r\nContent-Length: 1\r\n\r\nx",
        getpid());
    char *resp = roundtrip(req, (size_t)n, NULL);
    ck_assert_msg(status_of(resp) == 200 && strstr(resp, "\"metadata\":{\"owner\":\"alice\"}"), "%s", resp);
    free(resp);
    char path[64];
    snprintf(path, sizeof(path), "/tmp/cube-meta-%d", getpid());
    unlink(path);
}
END_TEST

START_TEST(routing_and_init_errors)
{
    const char *req = "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    char *resp = roundtrip(req, strlen(req), NULL);
    ck_assert_int_eq(status_of(resp), 404);
    free(resp);
    req = "DELETE /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    resp = roundtrip(req, strlen(req), NULL);
    ck_assert_int_eq(status_of(resp), 405);
    free(resp);
    resp = post("/init", "application/json", "[1]", 3, NULL);
    ck_assert_int_eq(status_of(resp), 400);
    free(resp);
    resp = post("/init", "application/json", "{\"envVars\":{\"A\":1}}", 19, NULL);
    ck_assert_int_eq(status_of(resp), 400);
    free(resp);
    resp = post("/init", "application/json", "{\"defaultUser\":\"no-such-user-here\"}", 35, NULL);
    ck_assert_int_eq(status_of(resp), 400);
    free(resp);
    /* garbage that is not HTTP at all */
    resp = roundtrip("\x16\x03\x01garbage\r\n\r\n", 13, NULL);
    free(resp);
    assert_healthy();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("agent_http");
    TCase *tc = tcase_create("malformed");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, stream_envelopes_malformed);
    tcase_add_test(tc, unary_bad_json);
    tcase_add_test(tc, files_bad_paths_and_bodies);
    tcase_add_test(tc, routing_and_init_errors);
    tcase_add_test(tc, files_range_and_gzip_upload);
    tcase_add_test(tc, files_multipart_lists_each_file_once);
    tcase_add_test(tc, files_metadata_headers);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
