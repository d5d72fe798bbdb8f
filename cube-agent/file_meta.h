/* A file's metadata (envd 0.6.2): string pairs the SDK sends as X-Metadata-<key> headers with a write and
 * reads back in EntryInfo.metadata. Kept with the file as extended attributes user.e2b.meta.<key>, so they
 * follow it through renames and snapshots. Keys arrive lower-cased (HTTP header names carry no case). */
#ifndef CUBE_AGENT_FILE_META_H
#define CUBE_AGENT_FILE_META_H

#include <cjson/cJSON.h>

#include "err.h"
#include "http.h"

/* The request's X-Metadata-* headers as an object (NULL when it has none); EINVAL naming the header for a key
 * or value the SDK itself would refuse. */
int file_meta_from_headers(http_req *req, cJSON **out, cube_err *err);
/* The file open at fd gets exactly meta's pairs (what it had before goes). */
int file_meta_apply(int fd, const cJSON *meta, cube_err *err);
/* path's pairs as an object, NULL when it has none (or is a symlink, which cannot carry them). */
cJSON *file_meta_read(const char *path);

#endif
