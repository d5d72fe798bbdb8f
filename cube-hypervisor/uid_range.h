/* A host uid range of a sandbox's own (lib/idmap.h says why): HV_UID_RANGE_SIZE uids from HV_UID_RANGE_FIRST
 * on, a range per live sandbox of the node, each held by a lock on its file in HV_UID_RANGES_DIR for as long
 * as the hypervisor that took it lives (a crash gives it back). The ranges stay below the user namespace
 * owners' (ns.c, NS_OWNER_BASE) and above the ranges /etc/subuid and container tools hand out by default. */
#ifndef CUBE_HV_UID_RANGE_H
#define CUBE_HV_UID_RANGE_H

#include <sys/types.h>

#include "err.h"

#define HV_UID_RANGES_DIR  "/run/cube/uid-ranges"
#define HV_UID_RANGE_FIRST 0x40000000u
#define HV_UID_RANGE_SIZE  65536u
#define HV_UID_RANGE_COUNT ((0x71000000u - HV_UID_RANGE_FIRST) / HV_UID_RANGE_SIZE)

/* Takes a free range: its first uid in *first, the lock's descriptor (close-on-exec; closing it gives the
 * range back) returned. -1 with err when every range is taken or the directory cannot be made. */
int hv_uid_range_claim(uid_t *first, cube_err *err);

#endif
