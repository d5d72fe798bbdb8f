/* cube-hypervisor: one sandbox's supervisor, exec'd by cubelet (or the containerd shim) per sandbox. */
#include "hv_main.h"

int main(int argc, char **argv)
{
    return hv_main(argc, argv);
}
