#include "echo_service.h"

#include <errno.h>
#include <string.h>
#include <time.h>

static int echo(void *service, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)service;
    const Cubetest__EchoRequest *req = reqp;
    Cubetest__EchoReply *resp = respp;
    for (int waited = 0; waited < req->sleep_ms; waited += 5) {
        if (cube_rpc_cancelled(ctx)) {
            resp->saw_cancel = 1;
            return cube_err_set(err, ECANCELED, "echo: client went away");
        }
        nanosleep(&(struct timespec){0, 5 * 1000000}, NULL);
    }
    if (req->fail_errno) return cube_err_set(err, req->fail_errno, "%s", req->fail_message);
    resp->text = cube_rpc_strdup(ctx, req->text);
    resp->deadline_left_ms = cube_rpc_deadline_left_ms(ctx);
    if (req->blob.len) {
        resp->blob.data = cube_rpc_alloc(ctx, req->blob.len);
        if (!resp->blob.data) return cube_err_set(err, ENOMEM, "echo: out of memory");
        memcpy(resp->blob.data, req->blob.data, req->blob.len);
        resp->blob.len = req->blob.len;
    }
    return 0;
}

const cube_rpc_method echo_methods[] = {
    {ECHO_METHOD, &cubetest__echo_request__descriptor, &cubetest__echo_reply__descriptor, echo},
    {0},
};
