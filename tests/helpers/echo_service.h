/* The test Echo service: echoes text and blob, sleeps on request (watching for cancellation), fails on
 * request. */
#ifndef CUBE_TEST_ECHO_SERVICE_H
#define CUBE_TEST_ECHO_SERVICE_H

#include "echo.pb-c.h"
#include "rpc.h"

#define ECHO_METHOD "/cubetest.Echo/Echo"

extern const cube_rpc_method echo_methods[];

#endif
