/* cube-agent's main as a function. cube-agent (a binary exec'd as a sandbox's PID 1) calls it; so does a
 * sandbox forked from cube-zygote, which already has the agent loaded and initialised and so starts it
 * without exec and without the dynamic loader's work (~3 ms of a cold start here). Never returns on success
 * (the agent _exits when told to stop); returns an exit status when its flags or its start fail. */
#pragma once

int agent_main(int argc, char **argv);
