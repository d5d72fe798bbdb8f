/* E2B network options <-> NetworkPolicy (see network.h). */
#include "network.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "netaddr.h"

#define MAX_RULES            256
#define API_MAX_HEADER_RULES 16   /* as cube-net's CN_MAX_HEADER_RULES */
#define API_MAX_HEADER_VALUE 4095 /* as cube-net's CN_HEADER_VALUE_MAX - 1 */

/* allowOut takes addresses, CIDRs and domain names ("*.example.com" too); denyOut addresses and CIDRs */
static int rule_entry(const char *field, size_t i, const char *s, cube_err *err)
{
    uint32_t a;
    uint8_t len;
    if (cube_parse_ipv4_prefix(s, &a, &len, err) == 0) return 0;
    bool wordy = false;
    for (const char *p = s; *p; p++)
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '*') wordy = true;
    if (wordy && !strchr(s, '/') && !strchr(s, ':')) {
        if (strcmp(field, "denyOut") == 0)
            return cube_err_set(
                err, EINVAL,
                "network.denyOut[%zu]: '%.64s' is a domain name; denyOut takes IPv4 addresses "
                "and CIDRs (deny everything with '0.0.0.0/0' and allow names in allowOut)",
                i, s);
        char norm[CUBE_DOMAIN_MAX];
        if (cube_parse_domain_pattern(s, norm, err) == 0) return 0;
    }
    return cube_err_prefix(err, "network.%s[%zu]", field, i);
}

static int rules(const cJSON *net, const char *name, char ***out, size_t *n, cube_err *err)
{
    const cJSON *arr = net ? cJSON_GetObjectItemCaseSensitive(net, name) : NULL;
    *out = NULL;
    *n = 0;
    if (!arr || cJSON_IsNull(arr)) return 0;
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) > MAX_RULES)
        return cube_err_set(err, EINVAL, "network.%s must be an array of at most %d %s", name, MAX_RULES,
                            strcmp(name, "allowOut") == 0 ? "IPv4 addresses, CIDRs or domain names"
                                                          : "IPv4 addresses or CIDRs");
    *out = calloc((size_t)cJSON_GetArraySize(arr) + 1, sizeof(char *));
    if (!*out) return cube_err_set(err, ENOMEM, "out of memory");
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        if (!cJSON_IsString(it))
            return cube_err_set(err, EINVAL, "network.%s[%zu] must be a string", name, *n);
        if (rule_entry(name, *n, it->valuestring, err) < 0) return -1;
        (*out)[(*n)++] = it->valuestring;
    }
    return 0;
}

/* egressProxy: {address "host:port", username?, password?} (RFC 1929's limits); null or {} for none */
static int egress_proxy(const cJSON *net, Cube__NetworkPolicy *p, cube_err *err)
{
    const cJSON *ep = net ? cJSON_GetObjectItemCaseSensitive(net, "egressProxy") : NULL;
    if (!ep || cJSON_IsNull(ep) || (cJSON_IsObject(ep) && !ep->child)) return 0;
    if (!cJSON_IsObject(ep)) return cube_err_set(err, EINVAL, "network.egressProxy must be an object");
    const cJSON *addr = cJSON_GetObjectItemCaseSensitive(ep, "address");
    if (!cJSON_IsString(addr))
        return cube_err_set(err, EINVAL, "network.egressProxy.address (\"host:port\") is required");
    const char *s = addr->valuestring, *colon = strrchr(s, ':');
    char host[CUBE_DOMAIN_MAX], *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    size_t hl = colon ? (size_t)(colon - s) : 0;
    uint32_t a;
    uint8_t len;
    if (!colon || !end || *end || colon[1] == '\0' || port < 1 || port > 65535 || hl == 0 ||
        hl >= sizeof(host))
        return cube_err_set(err, EINVAL, "network.egressProxy.address: '%.64s' is not host:port", s);
    memcpy(host, s, hl);
    host[hl] = '\0';
    char norm[CUBE_DOMAIN_MAX];
    cube_err e2 = {0};
    if (!(cube_parse_ipv4_prefix(host, &a, &len, &e2) == 0 && len == 32) &&
        (strchr(host, '*') || cube_parse_domain_pattern(host, norm, &e2) < 0))
        return cube_err_set(err, EINVAL,
                            "network.egressProxy.address: '%.64s' is not an IPv4 address or host name", host);
    p->egress_proxy = addr->valuestring;
    static const char *const creds[] = {"username", "password"};
    int given = 0;
    for (int i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(ep, creds[i]);
        if (!v || cJSON_IsNull(v)) continue;
        given |= 1 << i;
        if (!cJSON_IsString(v) || strlen(v->valuestring) > 255)
            return cube_err_set(err, EINVAL, "network.egressProxy.%s must be a string of at most 255 bytes",
                                creds[i]);
        if (i == 0)
            p->egress_proxy_username = v->valuestring;
        else
            p->egress_proxy_password = v->valuestring;
    }
    if (given == 1 || given == 2)
        return cube_err_set(err, EINVAL, "network.egressProxy: username and password go together");
    return 0;
}

/* a header name: an HTTP token; a value: no control characters (no header can be smuggled in) */
static bool header_name_ok(const char *s)
{
    if (!*s || strlen(s) > 127) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("!#$%&'*+-.^_`|~", *s)))
            return false;
    return true;
}

static bool header_value_ok(const char *s)
{
    if (strlen(s) > API_MAX_HEADER_VALUE) return false;
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 && *s != '\t') return false;
    return true;
}

/* rules: {"host": [{transform: {headers: {name: value}}}, ...]}; hosts as allowOut's names (a rule grants no
 * access by itself) */
static int header_rules(const cJSON *net, api_network *out, cube_err *err)
{
    const cJSON *rules = net ? cJSON_GetObjectItemCaseSensitive(net, "rules") : NULL;
    if (!rules || cJSON_IsNull(rules)) return 0;
    if (!cJSON_IsObject(rules))
        return cube_err_set(err, EINVAL, "network.rules must be an object of host: rules");
    size_t total = 0;
    const cJSON *host;
    cJSON_ArrayForEach(host, rules)
    {
        const cJSON *r;
        if (!cJSON_IsArray(host))
            return cube_err_set(err, EINVAL, "network.rules[\"%.64s\"] must be an array", host->string);
        cJSON_ArrayForEach(r, host)
        {
            const cJSON *h =
                cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(r, "transform"), "headers");
            if (cJSON_IsObject(h)) total += (size_t)cJSON_GetArraySize(h);
        }
    }
    if (total > API_MAX_HEADER_RULES)
        return cube_err_set(err, EINVAL, "network.rules: at most %d headers in all", API_MAX_HEADER_RULES);
    out->rule_store = calloc(total + 1, sizeof(*out->rule_store));
    out->rules = calloc(total + 1, sizeof(*out->rules));
    if (!out->rule_store || !out->rules) return cube_err_set(err, ENOMEM, "out of memory");
    cJSON_ArrayForEach(host, rules)
    {
        char norm[CUBE_DOMAIN_MAX];
        if (cube_parse_domain_pattern(host->string, norm, err) < 0)
            return cube_err_prefix(err, "network.rules[\"%.64s\"]", host->string);
        const cJSON *r;
        cJSON_ArrayForEach(r, host)
        {
            const cJSON *t = cJSON_IsObject(r) ? cJSON_GetObjectItemCaseSensitive(r, "transform") : NULL;
            const cJSON *h = t && !cJSON_IsNull(t) ? cJSON_GetObjectItemCaseSensitive(t, "headers") : NULL;
            if (!cJSON_IsObject(r) || (t && !cJSON_IsNull(t) && !cJSON_IsObject(t)) ||
                (h && !cJSON_IsNull(h) && !cJSON_IsObject(h)))
                return cube_err_set(err, EINVAL,
                                    "network.rules[\"%.64s\"]: each rule is {transform: {headers: {...}}}",
                                    host->string);
            const cJSON *kv;
            cJSON_ArrayForEach(kv, h)
            {
                if (!header_name_ok(kv->string))
                    return cube_err_set(err, EINVAL, "network.rules[\"%.64s\"]: '%.64s' is not a header name",
                                        host->string, kv->string);
                if (!cJSON_IsString(kv) || !header_value_ok(kv->valuestring))
                    return cube_err_set(
                        err, EINVAL,
                        "network.rules[\"%.64s\"].%.64s: a string of at most %d bytes, no control "
                        "characters",
                        host->string, kv->string, API_MAX_HEADER_VALUE);
                Cube__HeaderRule *hr = &out->rule_store[out->policy.n_rules];
                cube__header_rule__init(hr);
                hr->host = host->string;
                hr->header = kv->string;
                hr->value = kv->valuestring;
                out->rules[out->policy.n_rules++] = hr;
            }
        }
    }
    out->policy.rules = out->rules;
    return 0;
}

int api_network_parse(bool internet, const cJSON *net, api_network *out, cube_err *err)
{
    cube__network_policy__init(&out->policy);
    out->allow = out->deny = NULL;
    out->rules = NULL;
    out->rule_store = NULL;
    out->https_ports = NULL;
    out->inbound_given = false;
    out->private_traffic = out->traffic_given = false;
    out->policy.allow_internet_access = internet;
    if (net && !cJSON_IsNull(net) && !cJSON_IsObject(net))
        return cube_err_set(err, EINVAL, "network must be an object");
    const cJSON *pub = net ? cJSON_GetObjectItemCaseSensitive(net, "allowPublicTraffic") : NULL;
    if (pub && !cJSON_IsNull(pub) && !cJSON_IsBool(pub))
        return cube_err_set(err, EINVAL, "network.allowPublicTraffic must be a boolean");
    out->traffic_given = pub && !cJSON_IsNull(pub);
    out->private_traffic = cJSON_IsFalse(pub);
    /* inbound, for cube-proxy: the Host the sandbox's servers see, the ports that speak TLS */
    const cJSON *mask = net ? cJSON_GetObjectItemCaseSensitive(net, "maskRequestHost") : NULL;
    if (mask && !cJSON_IsNull(mask)) {
        bool ok = cJSON_IsString(mask) && strlen(mask->valuestring) <= 253;
        for (const char *s = ok ? mask->valuestring : ""; *s && ok; s++)
            ok = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
                 strchr(".-_:[]${}", *s);
        if (!ok)
            return cube_err_set(err, EINVAL,
                                "network.maskRequestHost must be a host[:port] of at most 253 characters "
                                "(\"${PORT}\" stands for the port)");
        out->policy.mask_request_host = mask->valuestring;
        out->inbound_given = true;
    }
    const cJSON *https = net ? cJSON_GetObjectItemCaseSensitive(net, "httpsPorts") : NULL;
    if (https && !cJSON_IsNull(https)) {
        if (!cJSON_IsArray(https) || cJSON_GetArraySize(https) > 64)
            return cube_err_set(err, EINVAL, "network.httpsPorts must be an array of at most 64 ports");
        out->https_ports = calloc((size_t)cJSON_GetArraySize(https) + 1, sizeof(uint32_t));
        if (!out->https_ports) return cube_err_set(err, ENOMEM, "out of memory");
        const cJSON *it;
        cJSON_ArrayForEach(it, https)
        {
            if (!cJSON_IsNumber(it) || it->valuedouble != (double)(int)it->valuedouble || it->valueint < 1 ||
                it->valueint > 65535 || it->valueint == 49983)
                return cube_err_set(err, EINVAL,
                                    "network.httpsPorts[%zu] must be a port 1..65535 (not envd's 49983)",
                                    out->policy.n_https_ports);
            out->https_ports[out->policy.n_https_ports++] = (uint32_t)it->valueint;
        }
        out->policy.https_ports = out->https_ports;
        out->inbound_given = true;
    }
    if (egress_proxy(net, &out->policy, err) < 0 || header_rules(net, out, err) < 0) return -1;
    if (out->policy.n_rules && out->policy.egress_proxy && *out->policy.egress_proxy)
        return cube_err_set(err, EINVAL,
                            "network.rules together with network.egressProxy is not supported yet");
    if (rules(net, "allowOut", &out->allow, &out->policy.n_allow_out, err) < 0 ||
        rules(net, "denyOut", &out->deny, &out->policy.n_deny_out, err) < 0)
        return -1;
    out->policy.allow_out = out->allow;
    out->policy.deny_out = out->deny;
    return 0;
}

void api_network_free(api_network *n)
{
    free(n->allow);
    free(n->deny);
    free(n->rules);
    free(n->rule_store);
    free(n->https_ports);
    n->https_ports = NULL;
    n->allow = n->deny = NULL;
    n->rules = NULL;
    n->rule_store = NULL;
}

cJSON *api_network_json(const Cube__NetworkPolicy *np, bool public_traffic)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *a = cJSON_AddArrayToObject(o, "allowOut"), *d = cJSON_AddArrayToObject(o, "denyOut");
    for (size_t i = 0; np && i < np->n_allow_out; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(np->allow_out[i]));
    for (size_t i = 0; np && i < np->n_deny_out; i++)
        cJSON_AddItemToArray(d, cJSON_CreateString(np->deny_out[i]));
    cJSON_AddBoolToObject(o, "allowPublicTraffic", public_traffic);
    if (np && np->mask_request_host && *np->mask_request_host)
        cJSON_AddStringToObject(o, "maskRequestHost", np->mask_request_host);
    if (np && np->n_https_ports) {
        cJSON *ports = cJSON_AddArrayToObject(o, "httpsPorts");
        for (size_t i = 0; i < np->n_https_ports; i++)
            cJSON_AddItemToArray(ports, cJSON_CreateNumber(np->https_ports[i]));
    }
    if (np && np->n_rules) { /* the hosts and header names; never the values */
        cJSON *rules = cJSON_AddObjectToObject(o, "rules");
        for (size_t i = 0; i < np->n_rules; i++) {
            cJSON *list = cJSON_GetObjectItemCaseSensitive(rules, np->rules[i]->host);
            if (!list) {
                list = cJSON_AddArrayToObject(rules, np->rules[i]->host);
                cJSON *t = cJSON_CreateObject();
                cJSON_AddObjectToObject(cJSON_AddObjectToObject(t, "transform"), "headers");
                cJSON_AddItemToArray(list, t);
            }
            cJSON *headers = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(list, 0), "transform"), "headers");
            cJSON_AddStringToObject(headers, np->rules[i]->header, "[redacted]");
        }
    }
    if (np && np->egress_proxy && *np->egress_proxy) { /* never the password */
        cJSON *ep = cJSON_AddObjectToObject(o, "egressProxy");
        cJSON_AddStringToObject(ep, "address", np->egress_proxy);
        if (np->egress_proxy_username && *np->egress_proxy_username)
            cJSON_AddStringToObject(ep, "username", np->egress_proxy_username);
    }
    return o;
}
