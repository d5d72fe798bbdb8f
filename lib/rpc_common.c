#include <errno.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/status.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "rpc.h"
#include "rpc_internal.h"

grpc_byte_buffer *rpc_pack(const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    grpc_slice slice = grpc_slice_malloc(len);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return bb;
}

ProtobufCMessage *rpc_unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc,
                             ProtobufCAllocator *alloc)
{
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, bb)) return NULL;
    grpc_slice s = grpc_byte_buffer_reader_readall(&reader);
    ProtobufCMessage *m =
        protobuf_c_message_unpack(desc, alloc, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    grpc_byte_buffer_reader_destroy(&reader);
    return m;
}

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;

static void lib_init(void)
{
    grpc_init();
}

/* grpc is initialised once per process and never shut down: grpc_shutdown blocks for up to 10 s waiting for
 * internal objects (seen after a call that ended with an error status), and process exit frees it all anyway.
 */
void rpc_lib_init(void)
{
    pthread_once(&lib_once, lib_init);
}

int cube_rpc_status_from_errno(int code)
{
    switch (code) {
    case 0:
        return GRPC_STATUS_OK;
    case ENOENT:
        return GRPC_STATUS_NOT_FOUND;
    case EEXIST:
        return GRPC_STATUS_ALREADY_EXISTS;
    case EINVAL:
    case EBADMSG:
        return GRPC_STATUS_INVALID_ARGUMENT;
    case ERANGE:
        return GRPC_STATUS_OUT_OF_RANGE;
    case ETIMEDOUT:
        return GRPC_STATUS_DEADLINE_EXCEEDED;
    case ECANCELED:
        return GRPC_STATUS_CANCELLED;
    case EPERM:
    case EACCES:
        return GRPC_STATUS_PERMISSION_DENIED;
    case EKEYREJECTED:
        return GRPC_STATUS_UNAUTHENTICATED;
    case EAGAIN:
    case ENOSPC:
    case EDQUOT:
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case EBUSY:
        return GRPC_STATUS_FAILED_PRECONDITION;
    case ENOSYS:
    case ENOTSUP:
        return GRPC_STATUS_UNIMPLEMENTED;
    case ECONNREFUSED:
    case EHOSTUNREACH:
        return GRPC_STATUS_UNAVAILABLE;
    case ENOTRECOVERABLE: /* what was asked failed and took the thing with it (a sandbox that ended) */
        return GRPC_STATUS_DATA_LOSS;
    default:
        return GRPC_STATUS_INTERNAL;
    }
}

bool cube_rpc_errno_carried(int code)
{
    return code == EDQUOT;
}

int cube_rpc_errno_from_status(int status)
{
    switch (status) {
    case GRPC_STATUS_OK:
        return 0;
    case GRPC_STATUS_CANCELLED:
        return ECANCELED;
    case GRPC_STATUS_INVALID_ARGUMENT:
        return EINVAL;
    case GRPC_STATUS_DEADLINE_EXCEEDED:
        return ETIMEDOUT;
    case GRPC_STATUS_NOT_FOUND:
        return ENOENT;
    case GRPC_STATUS_ALREADY_EXISTS:
        return EEXIST;
    case GRPC_STATUS_PERMISSION_DENIED:
        return EPERM;
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
        return EAGAIN;
    case GRPC_STATUS_FAILED_PRECONDITION:
    case GRPC_STATUS_ABORTED:
        return EBUSY;
    case GRPC_STATUS_OUT_OF_RANGE:
        return ERANGE;
    case GRPC_STATUS_UNIMPLEMENTED:
        return ENOSYS;
    case GRPC_STATUS_UNAVAILABLE:
        return ECONNREFUSED;
    case GRPC_STATUS_UNAUTHENTICATED:
        return EKEYREJECTED;
    case GRPC_STATUS_DATA_LOSS:
        return ENOTRECOVERABLE;
    default:
        return EIO;
    }
}
