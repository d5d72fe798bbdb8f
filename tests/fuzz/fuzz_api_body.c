/* cube-api's E2B JSON: a create body's network options (and allow_internet_access), and the metadata filter
 * of a list query. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "network.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cJSON *j = cJSON_ParseWithLength((const char *)data, size);
    if (j) {
        const cJSON *net = cJSON_GetObjectItem(j, "network");
        const cJSON *internet = cJSON_GetObjectItem(j, "allow_internet_access");
        api_network n;
        cube_err err = {0};
        if (api_network_parse(!cJSON_IsFalse(internet), cJSON_IsObject(net) ? net : NULL, &n, &err) == 0)
            cJSON_Delete(api_network_json(&n.policy, !n.private_traffic));
        api_network_free(&n); /* whatever parse returned (network.h) */
        cJSON_Delete(j);
    }
    char *q = malloc(size + 1);
    if (!q) return 0;
    memcpy(q, data, size);
    q[size] = '\0';
    static char keys[16][128], values[16][256];
    api_parse_metadata_filter(q, keys, values, 16);
    free(q);
    return 0;
}
