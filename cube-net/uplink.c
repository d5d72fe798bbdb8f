/* Forwarding and masquerade for the uplink (see uplink.h). */
#include "uplink.h"
#include "fsutil.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <nftables/libnftables.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int nft(const char *cmds, cube_err *err)
{
    struct nft_ctx *c = nft_ctx_new(NFT_CTX_DEFAULT);
    if (!c) return cube_err_set(err, ENOMEM, "nftables context");
    nft_ctx_buffer_output(c);
    nft_ctx_buffer_error(c);
    int rc = nft_run_cmd_from_buffer(c, cmds);
    if (rc != 0) {
        const char *msg = nft_ctx_get_error_buffer(c);
        cube_err_set(err, EIO, "nftables: %.*s", (int)strcspn(msg ? msg : "", "\n"), msg ? msg : "");
    }
    nft_ctx_free(c);
    return rc != 0 ? -1 : 0;
}

int cn_uplink_enable(const char *tag, const char *uplink, const char *cidr, int flows_max, cube_err *err)
{
    for (const char *p = uplink; *p; p++) /* it goes into a rule: an interface name, nothing else */
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '_' || *p == '.' || *p == '@'))
            return cube_err_set(err, EINVAL, "bad uplink interface name '%s'", uplink);
    if (cube_write_string("/proc/sys/net/ipv4/ip_forward", "1", err) < 0) return -1;
    char cmds[1024];
    snprintf(cmds, sizeof(cmds),
             "add table ip cube_%s\n"
             "flush table ip cube_%s\n"
             "add chain ip cube_%s postrouting { type nat hook postrouting priority srcnat; }\n"
             "add rule ip cube_%s postrouting ip saddr %s oifname \"%s\" masquerade\n",
             tag, tag, tag, tag, cidr, uplink);
    if (nft(cmds, err) < 0) return -1;
    if (flows_max <= 0) return 0;
    /* the cap: a set of source addresses, each with its count of tracked connections (nft's connlimit) */
    snprintf(cmds, sizeof(cmds),
             "add chain ip cube_%s forward { type filter hook forward priority filter; }\n"
             "add set ip cube_%s flows { type ipv4_addr; size 65535; flags dynamic; }\n"
             "add rule ip cube_%s forward ip saddr %s ct state new add @flows { ip saddr ct count over %d } "
             "counter drop\n",
             tag, tag, tag, cidr, flows_max);
    cube_err cerr = {0};
    if (nft(cmds, &cerr) < 0)
        cube_log_warn("sandboxes' flows are not capped: one sandbox can fill the node's connection table",
                      "err=\"%s\"", cerr.msg);
    return 0;
}

void cn_uplink_disable(const char *tag)
{
    cube_err err = {0};
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "delete table ip cube_%s\n", tag);
    nft(cmd, &err); /* absent already: nothing to do */
}
