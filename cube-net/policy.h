/* Policy rules in the BPF tries and on disk (one lease file a slot). */
#ifndef CUBE_NET_POLICY_H
#define CUBE_NET_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "net.h"

/* Writes (deletes) the policy's rules for slot under generation bit gen & 1. */
int cn_rules_write(int allow_fd, int deny_fd, int slot, uint32_t gen, const cn_policy *p, cube_err *err);
void cn_rules_delete(int allow_fd, int deny_fd, int slot, uint32_t gen, const cn_policy *p);

int cn_policy_save(const char *path, const char *lease, uint32_t gen, const cn_policy *p, cube_err *err);
int cn_policy_load(const char *path, char *lease, size_t lease_len, uint32_t *gen, cn_policy *p,
                   cube_err *err);

#endif
