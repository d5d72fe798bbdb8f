/* File-tree chores of teardown paths (never a request's hot path). */
#ifndef CUBE_FSUTIL_H
#define CUBE_FSUTIL_H

/* rm -rf that stays on one filesystem (a mount left inside is not descended into). 0 when the tree is gone.
 */
int cube_rm_rf(const char *path);

#endif
