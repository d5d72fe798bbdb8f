/* Built templates onto every node: a node that lacks a build another node holds, and has the base build it
 * stands on, gets a copy (the holder packs its layers, this master passes the chunks, the node checks the
 * whole by its sha256). One copy at a time per master, off every request path (the reaper starts them). */
#ifndef CUBE_MASTER_REPLICATE_H
#define CUBE_MASTER_REPLICATE_H

#include "master.h"

/* Starts the next copy due, unless one is under way. */
void replicate_templates(master *m);
/* Waits for the copy under way (at stop). */
void replicate_stop(master *m);

#endif
