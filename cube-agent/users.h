/* Users and groups of the sandbox, read from its /etc/passwd and /etc/group, as envd reads them (it is built
 * without cgo, so Go's os/user parses the two files itself). Not through NSS: glibc's getpwnam first tries
 * nscd's socket (a path walked through the sandbox's overlay, twice, for nothing: no sandbox runs nscd) and
 * reads nsswitch.conf, which cost every command and every /init of a pooled sandbox ~10 system calls.
 * Each call reads the files again: a user added by a command is seen by the next one. */
#ifndef CUBE_AGENT_USERS_H
#define CUBE_AGENT_USERS_H

#include <stddef.h>
#include <sys/types.h>

#define USERS_PASSWD "/etc/passwd"
#define USERS_GROUP  "/etc/group"

typedef struct users_entry {
    char name[64];
    uid_t uid;
    gid_t gid;
    char home[512];
} users_entry;

/* The passwd entry named name (its first, as getpwnam): 0, or -1 (errno ENOENT: no such user, or why the
 * file could not be read). */
int users_by_name(const char *passwd, const char *name, users_entry *out);
/* The name of uid / gid into out (cap bytes): 0, or -1 when there is none. */
int users_name_of_uid(const char *passwd, uid_t uid, char *out, size_t cap);
int users_name_of_gid(const char *group, gid_t gid, char *out, size_t cap);
/* The groups of user name, as getgrouplist: gid first, then every group that lists name as a member, each
 * once, at most cap. Returns how many (1 at least: gid). */
int users_groups(const char *group, const char *name, gid_t gid, gid_t *out, int cap);

#endif
