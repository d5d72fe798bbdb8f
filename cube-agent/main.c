/* cube-agent: the daemon inside every sandbox. envd protocol on :49983, code interpreter on :49999. */
#include "agent_main.h"

int main(int argc, char **argv)
{
    return agent_main(argc, argv);
}
