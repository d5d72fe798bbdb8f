/* The envd protocol version cube-agent speaks, as the E2B SDKs read it (envdVersion on a sandbox,
 * X-Envd-Version from the agent): the SDK gates features on it (0.5.7 octet-stream uploads, 0.6.2 file
 * metadata, 0.6.3 watch events with their entry). One value for the agent, cube-master's records and
 * cube-api's answers. */
#ifndef CUBE_ENVD_VERSION_H
#define CUBE_ENVD_VERSION_H

#define CUBE_ENVD_VERSION "0.6.3"

#endif
