/* The cube.Net RPC methods; the service pointer is a cube_net. */
#ifndef CUBE_NET_SERVICE_H
#define CUBE_NET_SERVICE_H

#include "net.h"
#include "rpc.h"

extern const cube_rpc_method cube_net_methods[];

#endif
