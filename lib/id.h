/* E2B-style identifiers: sandbox ids are 'i' + 20 chars of [a-z0-9] (DNS-label safe); tokens are random hex.
 */
#ifndef CUBE_ID_H
#define CUBE_ID_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

#define CUBE_ID_LEN 21 /* without the NUL */

/* Writes prefix + random [a-z0-9] up to len chars total into out[len+1]. */
int cube_id_new(char prefix, char *out, size_t len, cube_err *err);
int cube_sandbox_id_new(char out[CUBE_ID_LEN + 1], cube_err *err);
/* True for a syntactically valid sandbox id (what routing and the store accept). */
bool cube_sandbox_id_valid(const char *s);
/* A template's name or tag as E2B takes them: 1-63 characters of [a-z0-9._-], not starting with '.' or '-'
 * (safe as a path component on the nodes). */
bool cube_template_name_valid(const char *s);
/* nbytes random bytes as 2*nbytes hex chars + NUL into out. */
int cube_token_hex(char *out, size_t nbytes, cube_err *err);
/* Fills buf with nbytes from the kernel's CSPRNG. */
int cube_random_bytes(void *buf, size_t nbytes, cube_err *err);

#endif
