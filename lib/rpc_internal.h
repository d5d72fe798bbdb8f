/* Pieces the RPC client and server share. Not for use outside lib/rpc_*.c. */
#ifndef CUBE_RPC_INTERNAL_H
#define CUBE_RPC_INTERNAL_H

#include <grpc/byte_buffer.h>
#include <grpc/grpc_security.h>
#include <protobuf-c/protobuf-c.h>

#include "err.h"
#include "rpc.h"
#include "rpc_core.h"

/* Packs msg into a new byte buffer (NULL when memory is exhausted). */
grpc_byte_buffer *rpc_pack(const ProtobufCMessage *msg);
/* Unpacks a byte buffer as desc; NULL when malformed. */
ProtobufCMessage *rpc_unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc,
                             ProtobufCAllocator *alloc);

/* grpc_init, once per process. */
void rpc_lib_init(void);

/* Under ThreadSanitizer: a completion queue hands a call's memory from the thread that started a batch to the
 * one that takes its event, through gRPC's own synchronisation, which TSan cannot see (Debian's gRPC is not
 * instrumented). These name that hand-off on the batch's tag (or the call); elsewhere they compile to
 * nothing. */
#if defined(__SANITIZE_THREAD__)
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define RPC_HANDOFF_RELEASE(p) __tsan_release(p)
#define RPC_HANDOFF_ACQUIRE(p) __tsan_acquire(p)
#else
#define RPC_HANDOFF_RELEASE(p) ((void)(p))
#define RPC_HANDOFF_ACQUIRE(p) ((void)(p))
#endif
grpc_channel_credentials *cube_rpc_tls_channel_creds(const cube_rpc_tls *t);
grpc_server_credentials *cube_rpc_tls_server_creds(const cube_rpc_tls *t);

#endif
