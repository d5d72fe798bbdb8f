/* E2B's sandbox network options (create's `allow_internet_access` + `network`, and PUT .../network) as
 * cube's NetworkPolicy, checked here so a bad rule is a 400 before any sandbox is touched. */
#ifndef CUBE_API_NETWORK_H
#define CUBE_API_NETWORK_H

#include <cjson/cJSON.h>
#include <stdbool.h>

#include "common.pb-c.h"
#include "err.h"

typedef struct api_network {
    Cube__NetworkPolicy policy; /* its strings point into the parsed JSON */
    char **allow, **deny;
    Cube__HeaderRule *rule_store, **rules; /* policy.rules */
    uint32_t *https_ports;                 /* policy.https_ports */
    bool inbound_given;                    /* maskRequestHost or httpsPorts were in the body */
    bool private_traffic; /* allowPublicTraffic false: only requests with the traffic access token get in */
    bool traffic_given;   /* allowPublicTraffic was in the body at all */
} api_network;

/* internet: the allow_internet_access value (default true); net: the `network` object or NULL. out is
 * released with api_network_free whatever this returned (a rule list half read on an error included). */
int api_network_parse(bool internet, const cJSON *net, api_network *out, cube_err *err);
void api_network_free(api_network *n);
/* {allowOut, denyOut, allowPublicTraffic} for a sandbox's detail. */
cJSON *api_network_json(const Cube__NetworkPolicy *np, bool public_traffic);

#endif
