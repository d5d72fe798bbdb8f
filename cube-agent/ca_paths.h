/* Where a sandbox finds the node's egress CA: a file of its own (where update-ca-certificates looks), the
 * system bundle with it appended (what OpenSSL, curl and Python read), and the variables that point what
 * reads no system store at them. The agent puts them in place at /init; cubelet's CA layer holds them ahead
 * (cubelet/ca_layer.c). */
#ifndef CUBE_AGENT_CA_PATHS_H
#define CUBE_AGENT_CA_PATHS_H

#define CA_SYSTEM_BUNDLE "/etc/ssl/certs/ca-certificates.crt"
#define CA_CUBE_FILE     "/usr/local/share/ca-certificates/cube-egress.crt"

static const char *const cube_ca_env[][2] = {
    {"NODE_EXTRA_CA_CERTS", CA_CUBE_FILE},
    {"REQUESTS_CA_BUNDLE", CA_SYSTEM_BUNDLE},
    {"SSL_CERT_FILE", CA_SYSTEM_BUNDLE},
    {"CURL_CA_BUNDLE", CA_SYSTEM_BUNDLE},
};

#endif
