/* A line of waiters served in turns between the keys they came for (an API key, say): each turn goes to the
 * next key in line after the one served last, its oldest waiter first. One key's burst then delays another
 * key's request by a turn, not by the whole burst; with one key it is first come, first served. Waiters may
 * belong to groups (a template) when what comes free is for one group only. Pure bookkeeping: the caller
 * holds the lock that covers the line. Used by the HTTP servers' handler queue (by X-API-KEY) and by
 * cubelet's creates waiting on a busy node. */
#ifndef CUBE_FAIR_LINE_H
#define CUBE_FAIR_LINE_H

#include <stdbool.h>
#include <stdint.h>

#define FAIR_KEYS 64 /* keys told apart in one busy spell; more share the last place in the round */

typedef struct fair_entry {
    int key;           /* index into the line's keys of this busy spell */
    const void *group; /* what it waits for, where that matters (NULL: anything) */
    uint64_t seq;      /* arrival order */
    struct fair_entry *next;
} fair_entry;

typedef struct fair_line {
    fair_entry *head; /* in arrival order */
    uint64_t next_seq;
    char keys[FAIR_KEYS][64]; /* the keys seen since the line was last empty, in the order they came */
    int nkeys;
    int last; /* the key served last (-1: none yet) */
} fair_line;

void fair_init(fair_line *l);
/* e joins the line for key ("" or NULL: waiters that name none, one key together), waiting for group. */
void fair_join(fair_line *l, fair_entry *e, const char *key, const void *group);
/* Whether e is first in line: among those waiting for its group when same_group, else among all. */
bool fair_first(const fair_line *l, const fair_entry *e, bool same_group);
/* The first in line (NULL when empty). */
fair_entry *fair_next(const fair_line *l);
/* e got its turn: its key was served last. */
void fair_served(fair_line *l, const fair_entry *e);
/* e leaves the line (served, refused or given up); an empty line forgets its keys but the one served last,
 * whose turn has just been: the next spell's round starts after it. */
void fair_leave(fair_line *l, fair_entry *e);

#endif
