/* The code interpreter (port 49999): contexts, each a persistent worker process (Python for python and bash,
 * Node.js for javascript and typescript), and /execute streaming the E2B NDJSON events while the code runs.
 */
#ifndef CUBE_AGENT_INTERP_H
#define CUBE_AGENT_INTERP_H

#include "agent.h"

typedef struct interp interp;

interp *interp_new(const char *python, const char *node, agent *a);
/* Stops every worker. */
void interp_free(interp *ip);

#endif
