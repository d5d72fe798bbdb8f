/* cube-net's RPC service (proto/net.proto) over the core. */
#include "service.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "net.pb-c.h"
#include "timeutil.h"

static int policy_from(const Cube__NetworkPolicy *np, cn_policy *p, cube_err *err)
{
    memset(p, 0, sizeof(*p));
    if (!np) return 0; /* no policy: no egress (a pooled sandbox, not yet anyone's) */
    p->internet = np->allow_internet_access;
    if (cn_policy_add(p, true, (const char *const *)np->allow_out, np->n_allow_out, err) < 0 ||
        cn_policy_add(p, false, (const char *const *)np->deny_out, np->n_deny_out, err) < 0 ||
        cn_policy_set_proxy(p, np->egress_proxy, np->egress_proxy_username, np->egress_proxy_password, err) <
            0)
        return -1;
    for (size_t i = 0; i < np->n_rules; i++)
        if (cn_policy_add_rule(p, np->rules[i]->host, np->rules[i]->header, np->rules[i]->value, err) < 0)
            return -1;
    return 0;
}

static void slot_reply(cube_rpc_ctx *ctx, Cube__NetworkSlot *out, const char *lease, const cn_lease_info *li)
{
    out->sandbox_id = cube_rpc_strdup(ctx, lease);
    out->host_ifname = cube_rpc_strdup(ctx, li->host_ifname);
    out->address = cube_rpc_strdup(ctx, li->address);
    out->gateway = cube_rpc_strdup(ctx, li->gateway);
    out->netns_path = cube_rpc_strdup(ctx, li->netns);
}

static int ensure_network(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    const Cube__EnsureNetworkRequest *req = reqp;
    if (req->tap)
        return cube_err_set(err, ENOSYS, "tap slots (kvm backend) are not provided by this cube-net");
    cn_policy *p = cube_rpc_alloc(ctx, sizeof(*p));
    if (!p || policy_from(req->policy, p, err) < 0) return -1;
    cn_lease_info li;
    int64_t t0 = cube_now_mono_ns();
    if (cube_net_lease(svc, req->sandbox_id, p, &li, err) < 0) return -1;
    cube_log_info("network leased", "lease=%s address=%s ifname=%s lease_us=%.0f", req->sandbox_id,
                  li.address, li.host_ifname, (double)(cube_now_mono_ns() - t0) / 1e3);
    slot_reply(ctx, respp, req->sandbox_id, &li);
    return 0;
}

static int release_network(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    const Cube__NetRef *req = reqp;
    if (cube_net_release(svc, req->sandbox_id ? req->sandbox_id : "", req->vacated, err) < 0) return -1;
    cube_log_info("network released", "lease=%s vacated=%d", req->sandbox_id ? req->sandbox_id : "",
                  req->vacated ? 1 : 0);
    return 0;
}

static int update_policy(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)respp;
    const Cube__UpdatePolicyRequest *req = reqp;
    cn_policy *p = cube_rpc_alloc(ctx, sizeof(*p));
    if (!p || policy_from(req->policy, p, err) < 0) return -1;
    if (cube_net_update(svc, req->sandbox_id, p, err) < 0) return -1;
    cube_log_info("network policy updated", "lease=%s internet=%d allow=%d deny=%d", req->sandbox_id,
                  p->internet, p->n_allow, p->n_deny);
    return 0;
}

static int net_stats(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    const Cube__NetRef *req = reqp;
    Cube__NetStats *out = respp;
    cn_stats s;
    if (cube_net_stats(svc, req->sandbox_id, &s, err) < 0) return -1;
    out->tx_bytes = s.tx_bytes;
    out->rx_bytes = s.rx_bytes;
    out->tx_packets = s.tx_packets;
    out->rx_packets = s.rx_packets;
    out->dropped = s.dropped;
    out->denied = s.denied;
    return 0;
}

typedef struct list_acc {
    cube_rpc_ctx *ctx;
    Cube__NetworkList *out;
    size_t cap;
} list_acc;

static void add_one(void *arg, const char *lease, const cn_lease_info *li)
{
    list_acc *a = arg;
    if (a->out->n_slots == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        Cube__NetworkSlot **v = cube_rpc_alloc(a->ctx, cap * sizeof(*v));
        if (!v) return;
        if (a->out->n_slots) memcpy(v, a->out->slots, a->out->n_slots * sizeof(*v));
        a->out->slots = v;
        a->cap = cap;
    }
    Cube__NetworkSlot *s = cube_rpc_alloc(a->ctx, sizeof(*s));
    if (!s) return;
    cube__network_slot__init(s);
    slot_reply(a->ctx, s, lease, li);
    a->out->slots[a->out->n_slots++] = s;
}

static int list_networks(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)reqp;
    (void)err;
    list_acc a = {ctx, respp, 0};
    cube_net_each_lease(svc, add_one, &a);
    return 0;
}

const cube_rpc_method cube_net_methods[] = {
    CUBE_RPC_METHOD("cube.Net", "EnsureNetwork", ensure_network, cube__ensure_network_request,
                    cube__network_slot),
    CUBE_RPC_METHOD("cube.Net", "ReleaseNetwork", release_network, cube__net_ref, cube__empty),
    CUBE_RPC_METHOD("cube.Net", "UpdatePolicy", update_policy, cube__update_policy_request, cube__empty),
    CUBE_RPC_METHOD("cube.Net", "Stats", net_stats, cube__net_ref, cube__net_stats),
    CUBE_RPC_METHOD("cube.Net", "ListNetworks", list_networks, cube__empty, cube__network_list),
    {0},
};
