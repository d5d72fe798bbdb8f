/* cube-net calls (see netclient.h). */
#include "netclient.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "net.pb-c.h"

static int call(cubelet *c, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp, cube_err *err)
{
    cube_rpc_call_opts o = {.timeout_ms = 10000};
    return cube_rpc_call(c->net, method, req, rd, resp, &o, err);
}

int cl_net_lease(cubelet *c, const char *lease, char *netns, size_t len, cube_err *err)
{
    netns[0] = '\0';
    if (!c->net) return 0;
    /* E2B's default policy (internet allowed) from the start: the common create then needs no policy change,
     * one RPC fewer on its path. A pool sandbox runs only the agent, which makes no connections. */
    Cube__NetworkPolicy internet = CUBE__NETWORK_POLICY__INIT;
    internet.allow_internet_access = 1;
    Cube__EnsureNetworkRequest r = CUBE__ENSURE_NETWORK_REQUEST__INIT;
    r.sandbox_id = (char *)lease;
    r.policy = &internet;
    ProtobufCMessage *resp = NULL;
    if (call(c, "/cube.Net/EnsureNetwork", &r.base, &cube__network_slot__descriptor, &resp, err) < 0)
        return cube_err_prefix(err, "cube-net");
    const Cube__NetworkSlot *slot = (const Cube__NetworkSlot *)resp;
    snprintf(netns, len, "%s", slot->netns_path ? slot->netns_path : "");
    protobuf_c_message_free_unpacked(resp, NULL);
    if (!*netns) return cube_err_set(err, EIO, "cube-net answered no namespace for %s", lease);
    return 0;
}

int cl_net_policy(cubelet *c, const char *lease, const Cube__NetworkPolicy *np, cube_err *err)
{
    if (!c->net) return 0;
    Cube__NetworkPolicy internet = CUBE__NETWORK_POLICY__INIT;
    internet.allow_internet_access = 1;
    Cube__UpdatePolicyRequest r = CUBE__UPDATE_POLICY_REQUEST__INIT;
    r.sandbox_id = (char *)lease;
    r.policy = np ? (Cube__NetworkPolicy *)np : &internet;
    ProtobufCMessage *resp = NULL;
    int rc = call(c, "/cube.Net/UpdatePolicy", &r.base, &cube__empty__descriptor, &resp, err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return rc < 0 ? cube_err_prefix(err, "network policy") : 0;
}

bool cl_net_policy_is_default(const Cube__NetworkPolicy *np)
{
    return !np || (np->allow_internet_access && np->n_allow_out == 0 && np->n_deny_out == 0);
}

void cl_net_release(cubelet *c, const char *lease, bool vacated)
{
    if (!c->net) return;
    Cube__NetRef r = CUBE__NET_REF__INIT;
    r.sandbox_id = (char *)lease;
    r.vacated = vacated;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    if (call(c, "/cube.Net/ReleaseNetwork", &r.base, &cube__empty__descriptor, &resp, &err) < 0)
        cube_log_warn("network slot not released", "lease=%s err=\"%s\"", lease, err.msg);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
}

void cl_net_reconcile(cubelet *c)
{
    if (!c->net) return;
    Cube__Empty e = CUBE__EMPTY__INIT;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    if (call(c, "/cube.Net/ListNetworks", &e.base, &cube__network_list__descriptor, &resp, &err) < 0) {
        cube_log_warn("cannot list network leases", "err=\"%s\"", err.msg);
        return;
    }
    const Cube__NetworkList *l = (const Cube__NetworkList *)resp;
    for (size_t i = 0; i < l->n_slots; i++) {
        const char *lease = l->slots[i]->sandbox_id;
        int held = 0;
        pthread_mutex_lock(&c->lock);
        for (cl_slot *s = c->slots; s && !held; s = s->next) held = strcmp(s->slot_id, lease) == 0;
        pthread_mutex_unlock(&c->lock);
        if (held) continue;
        cube_log_info("orphaned network slot released", "lease=%s", lease);
        cl_net_release(c, lease, false);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
}
