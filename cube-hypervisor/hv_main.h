/* cube-hypervisor's main as a function (see hv_main.c). */
#pragma once

/* Runs one sandbox from a cube-hypervisor command line; returns the process's exit status. */
int hv_main(int argc, char **argv);
