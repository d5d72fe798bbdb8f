/* Egress policies: parsing E2B's allowOut/denyOut entries and writing them into the BPF tries. */
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bpf/net_maps.h"
#include "net.h"
#include "netaddr.h"
#include "policy.h"

int cn_parse_prefix(const char *s, cn_prefix *out, cube_err *err)
{
    return cube_parse_ipv4_prefix(s, &out->addr, &out->len, err);
}

/* an entry with a letter in it and no '/' is meant as a name */
static bool looks_like_name(const char *s)
{
    if (strchr(s, '/') || strchr(s, ':')) return false;
    for (; *s; s++)
        if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '*') return true;
    return false;
}

int cn_policy_add(cn_policy *p, bool allow, const char *const *list, size_t n, cube_err *err)
{
    int *count = allow ? &p->n_allow : &p->n_deny;
    cn_prefix *arr = allow ? p->allow : p->deny;
    for (size_t i = 0; i < n; i++) {
        if (allow && looks_like_name(list[i])) {
            if (p->n_names >= CN_MAX_POLICY_NAMES)
                return cube_err_set(err, EINVAL, "at most %d domain names in allowOut", CN_MAX_POLICY_NAMES);
            if (cube_parse_domain_pattern(list[i], p->names[p->n_names], err) < 0) return -1;
            p->n_names++;
            continue;
        }
        if (!allow && looks_like_name(list[i]))
            return cube_err_set(err, EINVAL,
                                "'%.64s': denyOut takes IPv4 addresses and CIDRs; names can only be allowed "
                                "(allowOut)",
                                list[i]);
        if (*count >= CN_MAX_POLICY_RULES)
            return cube_err_set(err, EINVAL, "at most %d %s entries", CN_MAX_POLICY_RULES,
                                allow ? "allowOut" : "denyOut");
        if (cn_parse_prefix(list[i], &arr[*count], err) < 0) return -1;
        (*count)++;
    }
    return 0;
}

int cn_policy_set_proxy(cn_policy *p, const char *address, const char *user, const char *pass, cube_err *err)
{
    memset(&p->proxy, 0, sizeof(p->proxy));
    if (!address || !*address) return 0;
    char host[CN_NAME_MAX];
    const char *colon = strrchr(address, ':');
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    size_t hl = colon ? (size_t)(colon - address) : 0;
    if (!colon || !end || *end || colon[1] == '\0' || port < 1 || port > 65535 || hl == 0 ||
        hl >= sizeof(host))
        return cube_err_set(err, EINVAL, "egress proxy '%.64s': host:port is needed", address);
    if (strlen(user ? user : "") > 255 || strlen(pass ? pass : "") > 255)
        return cube_err_set(err, EINVAL, "egress proxy credentials: at most 255 bytes each");
    memcpy(host, address, hl);
    host[hl] = '\0';
    struct in_addr a;
    if (inet_pton(AF_INET, host, &a) != 1) {
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
        int rc = getaddrinfo(host, NULL, &hints, &res);
        if (rc != 0 || !res)
            return cube_err_set(err, EINVAL, "egress proxy '%.64s': %s", address,
                                rc ? gai_strerror(rc) : "no IPv4 address");
        a = ((struct sockaddr_in *)res->ai_addr)->sin_addr;
        freeaddrinfo(res);
    }
    snprintf(p->proxy.address, sizeof(p->proxy.address), "%s", address);
    p->proxy.addr = a.s_addr;
    p->proxy.port = (uint16_t)port;
    snprintf(p->proxy.username, sizeof(p->proxy.username), "%s", user ? user : "");
    snprintf(p->proxy.password, sizeof(p->proxy.password), "%s", pass ? pass : "");
    return 0;
}

int cn_policy_add_rule(cn_policy *p, const char *host, const char *header, const char *value, cube_err *err)
{
    if (p->n_rules >= CN_MAX_HEADER_RULES)
        return cube_err_set(err, EINVAL, "at most %d header rules", CN_MAX_HEADER_RULES);
    struct cn_header_rule *r = &p->rules[p->n_rules];
    if (cube_parse_domain_pattern(host, r->host, err) < 0) return cube_err_prefix(err, "rules");
    size_t hl = strlen(header ? header : ""), vl = strlen(value ? value : "");
    if (hl == 0 || hl >= sizeof(r->header) || vl >= sizeof(r->value))
        return cube_err_set(err, EINVAL,
                            "rules[%s]: a header name of 1..127 and a value of at most %zu bytes", host,
                            sizeof(r->value) - 1);
    for (const char *s = header; *s; s++)
        if (*s <= ' ' || *s == ':' || *s == 0x7f)
            return cube_err_set(err, EINVAL, "rules[%s]: bad header name", host);
    for (const char *s = value; *s; s++)
        if ((unsigned char)*s < 0x20 && *s != '\t')
            return cube_err_set(err, EINVAL, "rules[%s].%s: control characters in the value", host, header);
    memcpy(r->header, header, hl + 1);
    memcpy(r->value, value, vl + 1);
    p->n_rules++;
    return 0;
}

const char *cn_policy_rule_host(const cn_policy *p, const char *name)
{
    const char *best = NULL;
    size_t best_len = 0;
    for (int i = 0; i < p->n_rules; i++) {
        const char *h = p->rules[i].host;
        if (!cube_domain_match(h, name)) continue;
        if (h[0] != '*') return h; /* exact wins */
        if (!best || strlen(h) > best_len) {
            best = h;
            best_len = strlen(h);
        }
    }
    return best;
}

const char *cn_policy_name_rule(const cn_policy *p, const char *name)
{
    for (int i = 0; i < p->n_names; i++)
        if (cube_domain_match(p->names[i], name)) return p->names[i];
    return NULL;
}

bool cn_policy_allows_name(const cn_policy *p, const char *name)
{
    return cn_policy_name_rule(p, name) != NULL;
}

static bool in_prefix(const cn_prefix *x, uint32_t addr)
{
    uint32_t mask = x->len ? htonl(~0u << (32 - x->len)) : 0;
    return (addr & mask) == x->addr;
}

bool cn_policy_allows_dest(const cn_policy *p, uint32_t addr, const cn_prefix *private_nets, int n)
{
    for (int i = 0; i < p->n_allow; i++)
        if (in_prefix(&p->allow[i], addr)) return true;
    for (int i = 0; i < p->n_deny; i++)
        if (in_prefix(&p->deny[i], addr)) return false;
    for (int i = 0; i < n; i++)
        if (in_prefix(&private_nets[i], addr)) return false;
    return p->internet;
}

bool cn_policy_allows_addr(const cn_policy *p, uint32_t addr)
{
    return cn_policy_allows_dest(p, addr, NULL, 0);
}

static void rule_key(struct cn_rule_key *k, int slot, uint32_t gen, const cn_prefix *pfx)
{
    memset(k, 0, sizeof(*k));
    k->prefixlen = 32 + pfx->len;
    k->tag = htonl((uint32_t)slot << 1 | (gen & 1));
    k->addr = pfx->addr;
}

int cn_rules_write(int allow_fd, int deny_fd, int slot, uint32_t gen, const cn_policy *p, cube_err *err)
{
    uint8_t one = 1;
    struct cn_rule_key k;
    for (int i = 0; i < p->n_allow; i++) {
        rule_key(&k, slot, gen, &p->allow[i]);
        if (bpf_map_update_elem(allow_fd, &k, &one, BPF_ANY) < 0)
            return cube_err_sys(err, errno, "write allow rule");
    }
    for (int i = 0; i < p->n_deny; i++) {
        rule_key(&k, slot, gen, &p->deny[i]);
        if (bpf_map_update_elem(deny_fd, &k, &one, BPF_ANY) < 0)
            return cube_err_sys(err, errno, "write deny rule");
    }
    return 0;
}

void cn_rules_delete(int allow_fd, int deny_fd, int slot, uint32_t gen, const cn_policy *p)
{
    struct cn_rule_key k;
    for (int i = 0; i < p->n_allow; i++) {
        rule_key(&k, slot, gen, &p->allow[i]);
        bpf_map_delete_elem(allow_fd, &k);
    }
    for (int i = 0; i < p->n_deny; i++) {
        rule_key(&k, slot, gen, &p->deny[i]);
        bpf_map_delete_elem(deny_fd, &k);
    }
}

/* credentials in the lease file: hex, so that any byte survives a line format */
static void hex(const char *s, char *out, size_t cap)
{
    static const char digits[] = "0123456789abcdef";
    size_t o = 0;
    for (; *s && o + 2 < cap; s++) {
        out[o++] = digits[(unsigned char)*s >> 4];
        out[o++] = digits[(unsigned char)*s & 15];
    }
    out[o] = '\0';
}

static void unhex(const char *s, char *out, size_t cap)
{
    size_t o = 0;
    if (strcmp(s, "-") == 0) s = "";
    for (; s[0] && s[1] && o + 1 < cap; s += 2) {
        unsigned v;
        if (sscanf(s, "%2x", &v) != 1) break;
        out[o++] = (char)v;
    }
    out[o] = '\0';
}

static int policy_write(const char *path, const char *lease, uint32_t gen, const cn_policy *p, char *buf,
                        size_t cap, cube_err *err);

int cn_policy_save(const char *path, const char *lease, uint32_t gen, const cn_policy *p, cube_err *err)
{
    /* on the lease path: one buffer, one write, one rename (a reader sees the old file or the new one) */
    const size_t cap = 256 + 2 * CN_MAX_POLICY_RULES * 28 + CN_MAX_POLICY_NAMES * (CN_NAME_MAX + 6) + 1400 +
                       CN_MAX_HEADER_RULES * (CN_NAME_MAX + 2 * 128 + 2 * CN_HEADER_VALUE_MAX + 8);
    char *buf = malloc(cap);
    if (!buf) return cube_err_set(err, ENOMEM, "policy file");
    int rc = policy_write(path, lease, gen, p, buf, cap, err);
    explicit_bzero(buf, cap); /* header values */
    free(buf);
    return rc;
}

static int policy_write(const char *path, const char *lease, uint32_t gen, const cn_policy *p, char *buf,
                        size_t cap, cube_err *err)
{
    size_t len = (size_t)snprintf(buf, cap, "lease %s\ngen %u\ninternet %d\n", lease, gen, p->internet);
    char a[INET_ADDRSTRLEN];
    for (int side = 0; side < 2; side++) {
        const cn_prefix *v = side ? p->deny : p->allow;
        for (int i = 0; i < (side ? p->n_deny : p->n_allow) && len < cap; i++)
            len += (size_t)snprintf(buf + len, cap - len, "%s %s/%u\n", side ? "deny" : "allow",
                                    inet_ntop(AF_INET, &v[i].addr, a, sizeof(a)), v[i].len);
    }
    for (int i = 0; i < p->n_names && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "name %s\n", p->names[i]);
    if (p->proxy.address[0] && len < cap) {
        char a[INET_ADDRSTRLEN], u[512], pw[512];
        hex(p->proxy.username, u, sizeof(u));
        hex(p->proxy.password, pw, sizeof(pw));
        len += (size_t)snprintf(buf + len, cap - len, "proxy %s %s %u %s %s\n", p->proxy.address,
                                inet_ntop(AF_INET, &p->proxy.addr, a, sizeof(a)), p->proxy.port,
                                u[0] ? u : "-", pw[0] ? pw : "-");
    }
    for (int i = 0; i < p->n_rules && len + 2 * (128 + CN_HEADER_VALUE_MAX) + CN_NAME_MAX + 16 < cap; i++) {
        len += (size_t)snprintf(buf + len, cap - len, "rule %s ", p->rules[i].host);
        hex(p->rules[i].header, buf + len, cap - len);
        len += strlen(buf + len);
        buf[len++] = ' ';
        hex(p->rules[i].value, buf + len, cap - len);
        len += strlen(buf + len);
        if (buf[len - 1] == ' ') buf[len++] = '-'; /* an empty value */
        buf[len++] = '\n';
    }
    if (len < cap) len += (size_t)snprintf(buf + len, cap - len, "end\n");
    if (len >= cap) return cube_err_set(err, E2BIG, "policy too large to save");
    /* a new lease: the file does not exist, so write it in place (no rename over an old file, which ext4
     * turns into a data flush); "end" marks it complete for the loader */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        ssize_t w = write(fd, buf, len);
        int e = errno;
        close(fd);
        if (w == (ssize_t)len) return 0;
        unlink(path);
        return cube_err_sys(err, w < 0 ? e : EIO, "write %s", path);
    }
    if (errno != EEXIST) return cube_err_sys(err, errno, "write %s", path);
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return cube_err_sys(err, errno, "write %s", tmp);
    ssize_t w = write(fd, buf, len);
    int e = errno;
    close(fd);
    if (w != (ssize_t)len || rename(tmp, path) < 0) {
        if (w == (ssize_t)len) e = errno;
        unlink(tmp);
        return cube_err_sys(err, w < 0 || w == (ssize_t)len ? e : EIO, "write %s", path);
    }
    return 0;
}

int cn_policy_load(const char *path, char *lease, size_t lease_len, uint32_t *gen, cn_policy *p,
                   cube_err *err)
{
    FILE *f = fopen(path, "re");
    if (!f) return cube_err_sys(err, errno, "read %s", path);
    memset(p, 0, sizeof(*p));
    char *line = NULL;
    size_t line_cap = 0;
    int have_lease = 0, complete = 0;
    while (getline(&line, &line_cap, f) > 0) {
        line[strcspn(line, "\n")] = '\0';
        if (strcmp(line, "end") == 0) complete = 1;
        char *v = strchr(line, ' ');
        if (!v) continue;
        *v++ = '\0';
        if (strcmp(line, "lease") == 0) {
            snprintf(lease, lease_len, "%s", v);
            have_lease = 1;
        } else if (strcmp(line, "gen") == 0) {
            *gen = (uint32_t)strtoul(v, NULL, 10);
        } else if (strcmp(line, "internet") == 0) {
            p->internet = atoi(v) != 0;
        } else if (strcmp(line, "rule") == 0 && p->n_rules < CN_MAX_HEADER_RULES) {
            char *h = strchr(v, ' '), *val = h ? strchr(h + 1, ' ') : NULL;
            if (h && val) {
                *h++ = '\0';
                *val++ = '\0';
                struct cn_header_rule *r = &p->rules[p->n_rules];
                snprintf(r->host, sizeof(r->host), "%s", v);
                unhex(h, r->header, sizeof(r->header));
                unhex(val, r->value, sizeof(r->value));
                p->n_rules++;
            }
        } else if (strcmp(line, "proxy") == 0) {
            char address[CN_NAME_MAX + 8], a[INET_ADDRSTRLEN], u[512], pw[512];
            unsigned port;
            struct in_addr ia;
            if (sscanf(v, "%261s %15s %u %511s %511s", address, a, &port, u, pw) == 5 &&
                inet_pton(AF_INET, a, &ia) == 1) {
                snprintf(p->proxy.address, sizeof(p->proxy.address), "%s", address);
                p->proxy.addr = ia.s_addr;
                p->proxy.port = (uint16_t)port;
                unhex(u, p->proxy.username, sizeof(p->proxy.username));
                unhex(pw, p->proxy.password, sizeof(p->proxy.password));
            }
        } else if (strcmp(line, "allow") == 0 || strcmp(line, "deny") == 0 || strcmp(line, "name") == 0) {
            const char *one[1] = {v};
            if (cn_policy_add(p, line[0] != 'd', one, 1, err) < 0) {
                free(line);
                fclose(f);
                return -1;
            }
        }
    }
    if (line) explicit_bzero(line, line_cap);
    free(line);
    fclose(f);
    if (!have_lease || !complete) return cube_err_set(err, EINVAL, "%s: incomplete lease file", path);
    return 0;
}
