/* Addresses allowed through names (see names.h). */
#include "names.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bpf/net_maps.h"
#include "netaddr.h"
#include "sandbox_net.skel.h"
#include "timeutil.h"

static int names_fd(const cube_net *n)
{
    return bpf_map__fd(n->skel->maps.cn_names);
}

static struct cn_name_key key_of(int idx, uint32_t gen, uint32_t addr)
{
    struct cn_name_key k = {.tag = htonl((uint32_t)idx << 1 | (gen & 1)), .addr = addr};
    return k;
}

/* The map entry for addr: the latest expiry of the slot's records for it. */
static int write_addr(cube_net *n, int idx, uint32_t gen, uint32_t addr, cube_err *err)
{
    cn_slot *s = &n->slots[idx];
    int64_t expires = 0;
    for (int i = 0; i < s->n_seen; i++)
        if (s->seen[i].addr == addr && s->seen[i].expires_ns > expires) expires = s->seen[i].expires_ns;
    struct cn_name_key k = key_of(idx, gen, addr);
    struct cn_name_val v = {0};
    bpf_map_lookup_elem(names_fd(n), &k, &v); /* keep used_ns */
    v.expires_ns = (__u64)expires;
    if (bpf_map_update_elem(names_fd(n), &k, &v, BPF_ANY) < 0)
        return cube_err_sys(err, errno, "allow an address of a name");
    return 0;
}

static void unwrite_addr(cube_net *n, int idx, uint32_t gen, uint32_t addr)
{
    struct cn_name_key k = key_of(idx, gen, addr);
    bpf_map_delete_elem(names_fd(n), &k);
}

static bool addr_recorded(const cn_slot *s, uint32_t addr)
{
    for (int i = 0; i < s->n_seen; i++)
        if (s->seen[i].addr == addr) return true;
    return false;
}

static void mark_dirty(cube_net *n, cn_slot *s)
{
    if (!s->names_dirty) n->names_dirty_slots++;
    s->names_dirty = true;
}

static void drop_rec(cube_net *n, int idx, int i)
{
    cn_slot *s = &n->slots[idx];
    mark_dirty(n, s);
    uint32_t addr = s->seen[i].addr;
    s->seen[i] = s->seen[--s->n_seen];
    if (!addr_recorded(s, addr))
        unwrite_addr(n, idx, s->gen, addr);
    else
        write_addr(n, idx, s->gen, addr, &(cube_err){0});
}

int cn_names_record(cube_net *n, int idx, const char *name, const uint32_t *addrs, int naddrs, uint32_t ttl_s,
                    cube_err *err)
{
    cn_slot *s = &n->slots[idx];
    if (!s->seen && !(s->seen = calloc(CN_NAME_RECS_PER_SLOT, sizeof(*s->seen))))
        return cube_err_sys(err, ENOMEM, "name records");
    if (ttl_s < CN_NAME_TTL_MIN_S) ttl_s = CN_NAME_TTL_MIN_S;
    if (ttl_s > CN_NAME_TTL_MAX_S) ttl_s = CN_NAME_TTL_MAX_S;
    int64_t expires = cube_now_mono_ns() + (int64_t)ttl_s * 1000000000LL;
    for (int a = 0; a < naddrs; a++) {
        int found = -1;
        for (int i = 0; i < s->n_seen && found < 0; i++)
            if (s->seen[i].addr == addrs[a] && strcasecmp(s->seen[i].name, name) == 0) found = i;
        if (found < 0) {
            if (s->n_seen == CN_NAME_RECS_PER_SLOT) { /* full: the one that expires first goes */
                int oldest = 0;
                for (int i = 1; i < s->n_seen; i++)
                    if (s->seen[i].expires_ns < s->seen[oldest].expires_ns) oldest = i;
                drop_rec(n, idx, oldest);
            }
            found = s->n_seen++;
            s->seen[found].addr = addrs[a];
            snprintf(s->seen[found].name, sizeof(s->seen[found].name), "%s", name);
            s->seen[found].expires_ns = 0;
        }
        if (expires > s->seen[found].expires_ns) s->seen[found].expires_ns = expires;
        mark_dirty(n, s);
        if (write_addr(n, idx, s->gen, addrs[a], err) < 0) return -1;
    }
    return 0;
}

bool cn_names_fresh(const cube_net *n, int idx, uint32_t addr)
{
    const cn_slot *s = &n->slots[idx];
    int64_t now = cube_now_mono_ns();
    for (int i = 0; i < s->n_seen; i++)
        if (s->seen[i].addr == addr && s->seen[i].expires_ns > now) return true;
    return false;
}

int cn_names_carry(cube_net *n, int idx, uint32_t gen, const cn_policy *p, cube_err *err)
{
    cn_slot *s = &n->slots[idx];
    for (int i = 0; i < s->n_seen;) {
        if (!cn_policy_allows_name(p, s->seen[i].name)) {
            drop_rec(n, idx, i); /* under the current generation, as it is until the flip */
            continue;
        }
        i++;
    }
    for (int i = 0; i < s->n_seen; i++)
        if (write_addr(n, idx, gen, s->seen[i].addr, err) < 0) return -1;
    return 0;
}

void cn_names_unwrite(cube_net *n, int idx, uint32_t gen)
{
    cn_slot *s = &n->slots[idx];
    for (int i = 0; i < s->n_seen; i++) unwrite_addr(n, idx, gen, s->seen[i].addr);
}

void cn_names_forget(cube_net *n, int idx)
{
    cn_slot *s = &n->slots[idx];
    if (s->n_seen) {
        for (int i = 0; i < s->n_seen; i++) {
            unwrite_addr(n, idx, 0, s->seen[i].addr);
            unwrite_addr(n, idx, 1, s->seen[i].addr);
        }
    }
    free(s->seen);
    s->seen = NULL;
    s->n_seen = 0;
    if (s->names_dirty) n->names_dirty_slots--;
    s->names_dirty = false;
}

void cn_names_sweep(cube_net *n)
{
    int64_t now = cube_now_mono_ns();
    for (int idx = 1; idx <= n->nslots; idx++) {
        cn_slot *s = &n->slots[idx];
        if (s->state != CN_LEASED) continue;
        for (int i = 0; i < s->n_seen;) {
            if (s->seen[i].expires_ns > now) {
                i++;
                continue;
            }
            struct cn_name_key k = key_of(idx, s->gen, s->seen[i].addr);
            struct cn_name_val v = {0};
            bpf_map_lookup_elem(names_fd(n), &k, &v);
            if ((int64_t)v.used_ns > now - (int64_t)CN_NAME_IDLE_S * 1000000000LL) {
                i++;
                continue;
            }
            drop_rec(n, idx, i);
        }
    }
}

void cn_names_path(const cube_net *n, int idx, char *buf, size_t len)
{
    snprintf(buf, len, "%s/slot-%d.names", n->cfg.state_dir, idx);
}

void cn_names_save(cube_net *n)
{
    /* nothing changed (an idle node): no walk over the slots */
    pthread_mutex_lock(&n->lock);
    int dirty = n->names_dirty_slots;
    pthread_mutex_unlock(&n->lock);
    for (int idx = 1; dirty > 0 && idx <= n->nslots; idx++) {
        pthread_mutex_lock(&n->lock);
        cn_slot *s = &n->slots[idx];
        if (s->state != CN_LEASED || !s->names_dirty) {
            pthread_mutex_unlock(&n->lock);
            continue;
        }
        s->names_dirty = false;
        n->names_dirty_slots--;
        dirty--;
        int count = s->n_seen;
        cn_name_rec *copy = count ? malloc((size_t)count * sizeof(*copy)) : NULL;
        if (copy) memcpy(copy, s->seen, (size_t)count * sizeof(*copy));
        pthread_mutex_unlock(&n->lock);
        char path[4300], tmp[4310];
        cn_names_path(n, idx, path, sizeof(path));
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        FILE *f = fopen(tmp, "we");
        for (int i = 0; f && copy && i < count; i++) {
            char a[INET_ADDRSTRLEN];
            fprintf(f, "%s %" PRId64 " %s\n", inet_ntop(AF_INET, &copy[i].addr, a, sizeof(a)),
                    copy[i].expires_ns, copy[i].name);
        }
        /* a slot released meanwhile: its file was removed with it, and must stay gone */
        if (f && fclose(f) == 0) {
            pthread_mutex_lock(&n->lock);
            if (s->state == CN_LEASED) rename(tmp, path);
            pthread_mutex_unlock(&n->lock);
        }
        unlink(tmp);
        free(copy);
    }
}

void cn_names_load(cube_net *n, int idx)
{
    char path[4300], line[512];
    cn_names_path(n, idx, path, sizeof(path));
    FILE *f = fopen(path, "re");
    if (!f) return;
    cn_slot *s = &n->slots[idx];
    int64_t now = cube_now_mono_ns();
    while (fgets(line, sizeof(line), f)) {
        char addr[INET_ADDRSTRLEN], name[CN_NAME_MAX];
        int64_t expires;
        uint32_t a;
        if (sscanf(line, "%15s %" SCNd64 " %253s", addr, &expires, name) != 3 ||
            inet_pton(AF_INET, addr, &a) != 1 || !s->policy || !cn_policy_allows_name(s->policy, name))
            continue;
        if (!s->seen && !(s->seen = calloc(CN_NAME_RECS_PER_SLOT, sizeof(*s->seen)))) break;
        if (s->n_seen == CN_NAME_RECS_PER_SLOT) break;
        cn_name_rec *r = &s->seen[s->n_seen++];
        r->addr = a;
        r->expires_ns = expires;
        snprintf(r->name, sizeof(r->name), "%s", name);
        /* flows that were going on when cube-net stopped go on: in use as of now */
        struct cn_name_key k = key_of(idx, s->gen, a);
        struct cn_name_val v = {.expires_ns = (__u64)(expires > 0 ? expires : 0), .used_ns = (__u64)now};
        bpf_map_update_elem(names_fd(n), &k, &v, BPF_ANY);
    }
    fclose(f);
}
