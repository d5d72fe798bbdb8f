/* A line served in turns by key (fair_line.h). */
#include "fair_line.h"

#include <stdio.h>
#include <string.h>

void fair_init(fair_line *l)
{
    memset(l, 0, sizeof(*l));
    l->last = -1;
}

static int key_index(fair_line *l, const char *key)
{
    for (int i = 0; i < l->nkeys; i++)
        if (strcmp(l->keys[i], key) == 0) return i;
    if (l->nkeys == FAIR_KEYS) return FAIR_KEYS - 1; /* the rest share the last place */
    snprintf(l->keys[l->nkeys], sizeof(l->keys[0]), "%s", key);
    return l->nkeys++;
}

void fair_join(fair_line *l, fair_entry *e, const char *key, const void *group)
{
    e->key = key_index(l, key ? key : "");
    e->group = group;
    e->seq = l->next_seq++;
    e->next = NULL;
    fair_entry **end = &l->head;
    while (*end) end = &(*end)->next;
    *end = e;
}

/* how far after the key served last this key's turn comes: 0 is next */
static int distance(const fair_line *l, int key)
{
    int n = l->nkeys ? l->nkeys : 1;
    return ((key - l->last - 1) % n + n) % n;
}

static bool before(const fair_line *l, const fair_entry *a, const fair_entry *b)
{
    int da = distance(l, a->key), db = distance(l, b->key);
    return da < db || (da == db && a->seq < b->seq);
}

bool fair_first(const fair_line *l, const fair_entry *e, bool same_group)
{
    for (const fair_entry *o = l->head; o; o = o->next)
        if (o != e && (!same_group || o->group == e->group) && before(l, o, e)) return false;
    return true;
}

fair_entry *fair_next(const fair_line *l)
{
    fair_entry *best = l->head;
    for (fair_entry *o = l->head; o; o = o->next)
        if (before(l, o, best)) best = o;
    return best;
}

void fair_served(fair_line *l, const fair_entry *e)
{
    l->last = e->key;
}

void fair_leave(fair_line *l, fair_entry *e)
{
    for (fair_entry **p = &l->head; *p; p = &(*p)->next)
        if (*p == e) {
            *p = e->next;
            break;
        }
    if (!l->head && l->last > 0) /* not busy any more: the next spell's round starts after the key served
                                  * last (its request may still run while others come) */
        memcpy(l->keys[0], l->keys[l->last], sizeof(l->keys[0]));
    if (!l->head) {
        l->nkeys = l->last >= 0 ? 1 : 0;
        l->last = l->last >= 0 ? 0 : -1;
    }
}
