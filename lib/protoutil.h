/* Small helpers over our generated protobuf messages, shared by the services that relay them. */
#ifndef CUBE_PROTOUTIL_H
#define CUBE_PROTOUTIL_H

#include "hypervisor.pb-c.h"

/* Copies the figures (scalars only) of one HvStats into another, leaving dst's message header alone. */
void cube_hv_stats_copy(Cube__HvStats *dst, const Cube__HvStats *src);

#endif
