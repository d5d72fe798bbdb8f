#include <errno.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/status.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "rpc.h"
#include "rpc_internal.h"

typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    max_align_t data[];
} arena_block;

struct rpc_arena {
    arena_block *blocks;
};

rpc_arena *rpc_arena_new(void)
{
    return calloc(1, sizeof(rpc_arena));
}

void *rpc_arena_alloc(rpc_arena *a, size_t size)
{
    size = (size + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    if (size == 0) size = sizeof(max_align_t);
    arena_block *b = a->blocks;
    if (!b || b->cap - b->used < size) {
        size_t cap = size > 4096 ? size : 4096;
        arena_block *nb = malloc(sizeof(*nb) + cap);
        if (!nb) return NULL;
        nb->used = 0;
        nb->cap = cap;
        /* a big one-off block goes second so the current small block keeps serving */
        if (b && size > 4096) {
            nb->next = b->next;
            b->next = nb;
        } else {
            nb->next = b;
            a->blocks = nb;
        }
        b = nb;
    }
    void *p = (char *)b->data + b->used;
    b->used += size;
    memset(p, 0, size);
    return p;
}

void rpc_arena_free(rpc_arena *a)
{
    if (!a) return;
    for (arena_block *b = a->blocks, *n; b; b = n) {
        n = b->next;
        free(b);
    }
    free(a);
}

static void *arena_pb_alloc(void *data, size_t size)
{
    return rpc_arena_alloc(data, size);
}

static void arena_pb_free(void *data, void *p)
{
    (void)data;
    (void)p;
}

ProtobufCAllocator rpc_arena_allocator(rpc_arena *a)
{
    return (ProtobufCAllocator){.alloc = arena_pb_alloc, .free = arena_pb_free, .allocator_data = a};
}

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
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case EBUSY:
        return GRPC_STATUS_FAILED_PRECONDITION;
    case ENOSYS:
    case ENOTSUP:
        return GRPC_STATUS_UNIMPLEMENTED;
    case ECONNREFUSED:
    case EHOSTUNREACH:
        return GRPC_STATUS_UNAVAILABLE;
    default:
        return GRPC_STATUS_INTERNAL;
    }
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
    default:
        return EIO;
    }
}
