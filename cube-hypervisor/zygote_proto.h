/* cube-zygote's wire format, over a SOCK_SEQPACKET socket pair (one message each way per spawn).
 *
 * Request: a zygote_req header, then the child's argv as NUL-terminated strings (argv[0] first, nothing
 * after the last NUL); SCM_RIGHTS carries header.nfds descriptors, the i-th to become descriptor
 * header.target[i] in the child (as posix_spawn's adddup2 would place it); the child runs at header.nice.
 * Reply: a zygote_reply; with pid > 0, SCM_RIGHTS carries a pidfd for the child (the child is the zygote's,
 * not the caller's: the caller watches and signals it through the pidfd). */
#pragma once

#include <stdint.h>

#define ZYGOTE_MAGIC    0x7a79676fu /* "zygo" */
#define ZYGOTE_MAX_FDS  4
#define ZYGOTE_MAX_ARGS 64
#define ZYGOTE_MAX_MSG  16384

typedef struct zygote_req {
    uint32_t magic;
    uint8_t nfds;
    uint8_t target[ZYGOTE_MAX_FDS];
    uint8_t nice; /* the child's nice value (0-19): its caller's, as a spawned process would inherit it */
    uint8_t pad[2];
} zygote_req;

typedef struct zygote_reply {
    int32_t pid;   /* > 0: started */
    int32_t error; /* errno when pid <= 0 */
} zygote_reply;
