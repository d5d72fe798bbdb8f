// Shared by the end-to-end tests: start real cube binaries, a minimal API double, and clean up after.
import { spawn } from 'node:child_process';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

export const buildDir = process.env.CUBE_BUILD_DIR;
// the version the agent speaks (lib/envd_version.h), as cube-api tells the SDK
// (CUBE_ROOT: the checkout, when these files run from a copy, as sdk-latest.sh runs them)
const root = process.env.CUBE_ROOT || new URL('../..', import.meta.url).pathname;
const envdVersion = readFileSync(`${root}/lib/envd_version.h`, 'utf8').match(/CUBE_ENVD_VERSION "([^"]+)"/)[1];
if (!buildDir) throw new Error('CUBE_BUILD_DIR must name the CMake build directory');

// Starts cube-agent on the SDK's debug ports (49983 envd, 49999 interpreter) and waits for /health.
export async function startAgent(args = []) {
  const proc = spawn(`${buildDir}/cube-agent/cube-agent`, ['--listen', '127.0.0.1', ...args], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const exited = new Promise((resolve) => proc.on('exit', resolve));
  for (let i = 0; i < 200; i++) {
    if (proc.exitCode !== null) throw new Error(`cube-agent exited with ${proc.exitCode}`);
    try {
      const r = await fetch('http://127.0.0.1:49983/health');
      if (r.status === 204) return { proc, stop: async () => { proc.kill('SIGTERM'); await exited; } };
    } catch {}
    await sleep(25);
  }
  proc.kill('SIGKILL');
  throw new Error('cube-agent did not answer /health');
}

// A test double of the control-plane API that only returns sandbox records (the agent side is real).
export async function startApiDouble({ envdAccessToken }) {
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const m = req.url.match(/^\/v2\/sandboxes(?:\/([^/]+)\/connect)?$/);
      if (req.method !== 'POST' || !m) {
        res.writeHead(404, { 'content-type': 'application/json' });
        return res.end(JSON.stringify({ code: 404, message: 'not in the test double' }));
      }
      const record = {
        sandboxID: m[1] || 'itest0000000000000000',
        templateID: 'base',
        clientID: 'cube',
        envdVersion,
        envdAccessToken,
      };
      res.writeHead(m[1] ? 200 : 201, { 'content-type': 'application/json' });
      res.end(JSON.stringify(record));
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${server.address().port}`;
  return { url, stop: () => new Promise((r) => server.close(r)) };
}

// What the node agent does after claiming a sandbox: POST /init with the access token and env vars.
export async function initAgent(body) {
  const r = await fetch('http://127.0.0.1:49983/init', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (r.status !== 204) throw new Error(`/init answered ${r.status}: ${await r.text()}`);
}
