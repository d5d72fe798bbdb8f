/* containerd's side of the shim: a ttrpc frame header, the Request around each call, and the call's own
 * message for every method the shim serves. */
#include <stdint.h>
#include <string.h>

#include "shim.h"
#include "shim.pb-c.h"
#include "ttrpc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 10) return 0;
    uint32_t len, stream;
    uint8_t type, flags;
    ttrpc_parse_header(data, &len, &stream, &type, &flags);
    Cubeshim__Request *req = cubeshim__request__unpack(NULL, size - 10, data + 10);
    if (!req) return 0;
    for (const ttrpc_method *m = shim_methods; m->service; m++) {
        if (strcmp(m->service, req->service ? req->service : "") ||
            strcmp(m->method, req->method ? req->method : ""))
            continue;
        ProtobufCMessage *in =
            protobuf_c_message_unpack(m->request, NULL, req->payload.len, req->payload.data);
        if (in) protobuf_c_message_free_unpacked(in, NULL);
    }
    /* and every method's message from the same bytes, whatever the Request named */
    for (const ttrpc_method *m = shim_methods; m->service; m++) {
        ProtobufCMessage *in = protobuf_c_message_unpack(m->request, NULL, size - 10, data + 10);
        if (in) protobuf_c_message_free_unpacked(in, NULL);
    }
    cubeshim__request__free_unpacked(req, NULL);
    return 0;
}
