/* rtnetlink over libmnl: build a request, send it, read the ack. */
#include "nl.h"

#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/fib_rules.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct cn_nl {
    struct mnl_socket *sock;
    unsigned portid;
    unsigned seq;
    char buf[8192];
};

cn_nl *cn_nl_open(cube_err *err)
{
    cn_nl *nl = calloc(1, sizeof(*nl));
    if (!nl) {
        cube_err_sys(err, ENOMEM, "netlink");
        return NULL;
    }
    nl->sock = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
    if (!nl->sock || mnl_socket_bind(nl->sock, 0, MNL_SOCKET_AUTOPID) < 0) {
        cube_err_sys(err, errno, "netlink socket");
        if (nl->sock) mnl_socket_close(nl->sock);
        free(nl);
        return NULL;
    }
    nl->portid = mnl_socket_get_portid(nl->sock);
    nl->seq = (unsigned)time(NULL);
    return nl;
}

void cn_nl_close(cn_nl *nl)
{
    if (!nl) return;
    mnl_socket_close(nl->sock);
    free(nl);
}

static struct nlmsghdr *start(cn_nl *nl, int type, int flags)
{
    struct nlmsghdr *h = mnl_nlmsg_put_header(nl->buf);
    h->nlmsg_type = type;
    h->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    h->nlmsg_seq = ++nl->seq;
    return h;
}

/* Sends h and reads until its ack; data callbacks (for GET) go to cb. */
static int transact(cn_nl *nl, struct nlmsghdr *h, mnl_cb_t cb, void *data, const char *what, cube_err *err)
{
    if (mnl_socket_sendto(nl->sock, h, h->nlmsg_len) < 0) return cube_err_sys(err, errno, "netlink %s", what);
    unsigned seq = h->nlmsg_seq;
    for (;;) {
        ssize_t n = mnl_socket_recvfrom(nl->sock, nl->buf, sizeof(nl->buf));
        if (n < 0) return cube_err_sys(err, errno, "netlink %s", what);
        int rc = mnl_cb_run(nl->buf, (size_t)n, seq, nl->portid, cb, data);
        if (rc < 0) return cube_err_sys(err, errno, "%s", what);
        if (rc == MNL_CB_STOP) return 0;
    }
}

int cn_nl_add_veth(cn_nl *nl, const char *name, const uint8_t host_mac[6], const char *peer_name,
                   int peer_index, const uint8_t peer_mac[6], int netns_fd, cube_err *err)
{
    struct nlmsghdr *h = start(nl, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(h, sizeof(*ifi));
    ifi->ifi_family = AF_UNSPEC;
    mnl_attr_put_strz(h, IFLA_IFNAME, name);
    mnl_attr_put(h, IFLA_ADDRESS, 6, host_mac);
    /* one queue each way, from the start: left to the kernel, a veth gets one per possible CPU and is cut to
     * one once registered, and each cut (this end's and its peer's) waits for an RCU grace period */
    mnl_attr_put_u32(h, IFLA_NUM_TX_QUEUES, 1);
    mnl_attr_put_u32(h, IFLA_NUM_RX_QUEUES, 1);
    struct nlattr *linkinfo = mnl_attr_nest_start(h, IFLA_LINKINFO);
    mnl_attr_put_strz(h, IFLA_INFO_KIND, "veth");
    struct nlattr *data = mnl_attr_nest_start(h, IFLA_INFO_DATA);
    struct nlattr *peer = mnl_attr_nest_start(h, VETH_INFO_PEER);
    struct ifinfomsg *pifi = mnl_nlmsg_put_extra_header(h, sizeof(*pifi));
    pifi->ifi_family = AF_UNSPEC;
    pifi->ifi_index = peer_index;
    mnl_attr_put_strz(h, IFLA_IFNAME, peer_name);
    mnl_attr_put(h, IFLA_ADDRESS, 6, peer_mac);
    mnl_attr_put_u32(h, IFLA_NUM_TX_QUEUES, 1);
    mnl_attr_put_u32(h, IFLA_NUM_RX_QUEUES, 1);
    mnl_attr_put_u32(h, IFLA_NET_NS_FD, (uint32_t)netns_fd);
    mnl_attr_nest_end(h, peer);
    mnl_attr_nest_end(h, data);
    mnl_attr_nest_end(h, linkinfo);
    if (transact(nl, h, NULL, NULL, "create veth", err) < 0) return cube_err_prefix(err, "veth %s", name);
    int idx = cn_nl_link_index(nl, name, err);
    if (idx <= 0) return idx < 0 ? -1 : cube_err_set(err, ENODEV, "veth %s vanished", name);
    return idx;
}

static int set_flags(cn_nl *nl, int ifindex, unsigned flags, unsigned change, cube_err *err)
{
    struct nlmsghdr *h = start(nl, RTM_NEWLINK, 0);
    struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(h, sizeof(*ifi));
    ifi->ifi_family = AF_UNSPEC;
    ifi->ifi_index = ifindex;
    ifi->ifi_flags = flags;
    ifi->ifi_change = change;
    return transact(nl, h, NULL, NULL, "set link up", err);
}

int cn_nl_link_up(cn_nl *nl, int ifindex, cube_err *err)
{
    return set_flags(nl, ifindex, IFF_UP, IFF_UP, err);
}

int cn_nl_link_del(cn_nl *nl, int ifindex, cube_err *err)
{
    struct nlmsghdr *h = start(nl, RTM_DELLINK, 0);
    struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(h, sizeof(*ifi));
    ifi->ifi_family = AF_UNSPEC;
    ifi->ifi_index = ifindex;
    return transact(nl, h, NULL, NULL, "delete link", err);
}

int cn_nl_link_set_group(cn_nl *nl, int ifindex, uint32_t group, cube_err *err)
{
    struct nlmsghdr *h = start(nl, RTM_NEWLINK, 0);
    struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(h, sizeof(*ifi));
    ifi->ifi_family = AF_UNSPEC;
    ifi->ifi_index = ifindex;
    mnl_attr_put_u32(h, IFLA_GROUP, group);
    return transact(nl, h, NULL, NULL, "set link group", err);
}

int cn_nl_group_del(cn_nl *nl, uint32_t group, cube_err *err)
{
    struct nlmsghdr *h = start(nl, RTM_DELLINK, 0);
    struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(h, sizeof(*ifi));
    ifi->ifi_family = AF_UNSPEC; /* no index: the group names the links */
    mnl_attr_put_u32(h, IFLA_GROUP, group);
    cube_err e = {0};
    if (transact(nl, h, NULL, NULL, "delete link group", &e) == 0 || e.code == ENODEV) return 0;
    *err = e;
    return -1;
}

static int link_index_cb(const struct nlmsghdr *h, void *data)
{
    const struct ifinfomsg *ifi = mnl_nlmsg_get_payload(h);
    *(int *)data = ifi->ifi_index;
    return MNL_CB_OK;
}

int cn_nl_link_index(cn_nl *nl, const char *name, cube_err *err)
{
    struct nlmsghdr *h = start(nl, RTM_GETLINK, 0);
    struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(h, sizeof(*ifi));
    ifi->ifi_family = AF_UNSPEC;
    mnl_attr_put_strz(h, IFLA_IFNAME, name);
    int idx = 0;
    cube_err e = {0};
    if (transact(nl, h, link_index_cb, &idx, "get link", &e) < 0) {
        if (e.code == ENODEV) return 0;
        *err = e;
        return -1;
    }
    return idx;
}

int cn_nl_addr_add(cn_nl *nl, int ifindex, uint32_t addr, int prefix, cube_err *err)
{
    struct nlmsghdr *h = start(nl, RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE);
    struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(h, sizeof(*ifa));
    ifa->ifa_family = AF_INET;
    ifa->ifa_prefixlen = (unsigned char)prefix;
    ifa->ifa_scope = RT_SCOPE_UNIVERSE;
    ifa->ifa_index = (unsigned)ifindex;
    mnl_attr_put_u32(h, IFA_LOCAL, addr);
    mnl_attr_put_u32(h, IFA_ADDRESS, addr);
    return transact(nl, h, NULL, NULL, "add address", err);
}

int cn_nl_route_add(cn_nl *nl, int ifindex, uint32_t dst, int prefix, uint32_t gw, cube_err *err)
{
    struct nlmsghdr *h = start(nl, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE);
    struct rtmsg *rt = mnl_nlmsg_put_extra_header(h, sizeof(*rt));
    rt->rtm_family = AF_INET;
    rt->rtm_dst_len = (unsigned char)prefix;
    rt->rtm_table = RT_TABLE_MAIN;
    rt->rtm_protocol = RTPROT_STATIC;
    rt->rtm_scope = gw ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
    rt->rtm_type = RTN_UNICAST;
    if (prefix) mnl_attr_put_u32(h, RTA_DST, dst);
    if (gw) mnl_attr_put_u32(h, RTA_GATEWAY, gw);
    mnl_attr_put_u32(h, RTA_OIF, (uint32_t)ifindex);
    return transact(nl, h, NULL, NULL, "add route", err);
}

int cn_nl_neigh_add(cn_nl *nl, int ifindex, uint32_t addr, const uint8_t mac[6], cube_err *err)
{
    struct nlmsghdr *h = start(nl, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE);
    struct ndmsg *nd = mnl_nlmsg_put_extra_header(h, sizeof(*nd));
    nd->ndm_family = AF_INET;
    nd->ndm_ifindex = ifindex;
    nd->ndm_state = NUD_PERMANENT;
    nd->ndm_type = RTN_UNICAST;
    mnl_attr_put_u32(h, NDA_DST, addr);
    mnl_attr_put(h, NDA_LLADDR, 6, mac);
    return transact(nl, h, NULL, NULL, "add neighbour", err);
}

static int local_table(cn_nl *nl, uint16_t type, uint16_t flags, uint32_t table, cube_err *err)
{
    struct nlmsghdr *h = start(nl, type, flags);
    struct rtmsg *rt = mnl_nlmsg_put_extra_header(h, sizeof(*rt));
    rt->rtm_family = AF_INET;
    rt->rtm_dst_len = 0;
    rt->rtm_table = RT_TABLE_UNSPEC; /* RTA_TABLE below: ids over 255 */
    rt->rtm_protocol = RTPROT_STATIC;
    rt->rtm_scope = RT_SCOPE_HOST;
    rt->rtm_type = RTN_LOCAL;
    mnl_attr_put_u32(h, RTA_TABLE, table);
    mnl_attr_put_u32(h, RTA_OIF, 1); /* lo */
    return transact(nl, h, NULL, NULL, type == RTM_NEWROUTE ? "add local route" : "delete local route", err);
}

int cn_nl_local_table_add(cn_nl *nl, uint32_t table, cube_err *err)
{
    return local_table(nl, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, table, err);
}

int cn_nl_local_table_del(cn_nl *nl, uint32_t table, cube_err *err)
{
    int rc = local_table(nl, RTM_DELROUTE, 0, table, err);
    return rc < 0 && (err->code == ESRCH || err->code == ENOENT) ? 0 : rc;
}

static int mark_rule(cn_nl *nl, uint16_t type, uint16_t flags, uint32_t mark, uint32_t table, uint32_t prio,
                     cube_err *err)
{
    struct nlmsghdr *h = start(nl, type, flags);
    struct fib_rule_hdr *fr = mnl_nlmsg_put_extra_header(h, sizeof(*fr));
    fr->family = AF_INET;
    fr->action = FR_ACT_TO_TBL;
    fr->table = RT_TABLE_UNSPEC;
    mnl_attr_put_u32(h, FRA_TABLE, table);
    mnl_attr_put_u32(h, FRA_FWMARK, mark);
    mnl_attr_put_u32(h, FRA_FWMASK, 0xffffffffu);
    mnl_attr_put_u32(h, FRA_PRIORITY, prio);
    return transact(nl, h, NULL, NULL, type == RTM_NEWRULE ? "add rule" : "delete rule", err);
}

int cn_nl_mark_rule_add(cn_nl *nl, uint32_t mark, uint32_t table, uint32_t priority, cube_err *err)
{
    int rc = mark_rule(nl, RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, mark, table, priority, err);
    return rc < 0 && err->code == EEXIST ? 0 : rc;
}

int cn_nl_mark_rule_del(cn_nl *nl, uint32_t mark, uint32_t table, uint32_t priority, cube_err *err)
{
    int rc = mark_rule(nl, RTM_DELRULE, 0, mark, table, priority, err);
    return rc < 0 && (err->code == ENOENT || err->code == ESRCH) ? 0 : rc;
}
