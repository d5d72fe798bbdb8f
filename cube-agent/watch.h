/* Directory watchers on inotify, for WatchDir (a stream) and Create/GetEvents/RemoveWatcher (polled).
 * Events come out as FilesystemEvent JSON objects; names are relative to the watched directory. */
#ifndef CUBE_AGENT_WATCH_H
#define CUBE_AGENT_WATCH_H

#include <cjson/cJSON.h>
#include <stdbool.h>

#include "agent.h"

typedef struct watcher watcher;

/* dir is absolute and must be a directory (ENOENT, ENOTDIR otherwise). */
watcher *watcher_new(const char *dir, bool recursive, bool include_entry, cube_err *err);
void watcher_free(watcher *w);
/* Waits up to timeout_ms (0: no wait) for events; appends FilesystemEvent objects to out. Returns how many.
 */
int watcher_read(watcher *w, int timeout_ms, cJSON *out);

/* Polled watchers by id (CreateWatcher / GetWatcherEvents / RemoveWatcher). */
int watch_table_add(watch_table *t, watcher *w, char *id_out, size_t cap);
int watch_table_remove(watch_table *t, const char *id);
/* Runs fn on the watcher with id while holding the table lock (so RemoveWatcher cannot free it mid-read). */
int watch_table_with(watch_table *t, const char *id, int (*fn)(watcher *w, void *arg), void *arg);

/* EntryInfo JSON for path (lstat); NULL with err when it cannot be read. */
cJSON *entry_info(const char *path, cube_err *err);

#endif
