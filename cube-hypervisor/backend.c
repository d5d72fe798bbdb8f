/* Which backend runs a sandbox. */
#include <errno.h>
#include <string.h>

#include "hv.h"
#include "log.h"

const hv_ops *hv_backend_pick(const char *name, bool guest_given, cube_err *err)
{
    if (!name || strcmp(name, "auto") == 0) {
        cube_err why = {0};
        bool kvm = guest_given && hv_kvm_ops.available(&why) == 0;
        /* said at info only when there was a choice to make (a guest was given): else it is every sandbox's
         */
        cube_log(guest_given ? CUBE_LOG_INFO : CUBE_LOG_DEBUG, "backend chosen", "backend=%s reason=\"%s\"",
                 kvm ? "kvm" : "ns",
                 kvm            ? "usable /dev/kvm and a guest kernel and disk"
                 : !guest_given ? "no guest kernel and disk image given"
                                : why.msg);
        name = kvm ? "kvm" : "ns";
    }
    const hv_ops *ops = strcmp(name, "ns") == 0 ? &hv_ns_ops : strcmp(name, "kvm") == 0 ? &hv_kvm_ops : NULL;
    if (!ops) {
        cube_err_set(err, EINVAL, "unknown backend '%s' (auto, ns, kvm)", name);
        return NULL;
    }
    return ops->available(err) < 0 ? NULL : ops;
}
