// Chaos on one node: while SDK clients loop create -> command -> file write -> kill, each service is killed
// with SIGKILL once (cube-api, cube-master, cubelet, cube-proxy, cube-net) and started again (deploy/cube up).
// Afterwards every sandbox the API lists answers a command, none that a client was told exists is lost, and
// once they are killed and the stack is down nothing is left: processes, mounts, cgroups, veths, namespaces,
// loop devices.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Sandbox } from 'e2b';
import { assertNothingLeft } from './leftovers.mjs';

const root = process.env.CUBE_ROOT || new URL('../..', import.meta.url).pathname;
const data = process.env.CUBE_CHAOS_DATA || '/var/lib/cube-e2e';
const port = Number(process.env.CUBE_CHAOS_PORT || 3610);
const cube = (...args) => execFileSync(`${root}/deploy/cube`, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
const pidOf = (svc) => Number(readFileSync(`${data}/run/${svc}.pid`, 'utf8'));

before(() => {
  cube('down', '--data', data, '--port', String(port));
  const out = cube('up', '--data', data, '--port', String(port), '--pool-size', '2');
  for (const m of out.matchAll(/^export (\w+)=(.*)$/gm)) process.env[m[1]] = m[2];
});

after(() => {
  try {
    cube('down', '--data', data, '--port', String(port));
  } catch {}
});

test('kill -9 of each service under load loses nothing and leaves nothing', async () => {
  const told = new Map(); // sandbox id -> Sandbox, for every create a client was told succeeded and not killed
  let stop = false;
  const stats = { rounds: 0, failed: 0 };
  const loop = async () => {
    while (!stop) {
      let s = null;
      try {
        s = await Sandbox.create({ timeoutMs: 600_000 });
        told.set(s.sandboxId, s);
        await s.commands.run('echo ok');
        await s.files.write('/home/user/chaos.txt', 'x');
        told.delete(s.sandboxId); // once its kill is asked for, a client expects it gone (answered or not)
        await s.kill();
        stats.rounds++;
      } catch {
        stats.failed++; // a service was down: the client is told; what it was told exists must still be there
        await sleep(100);
      }
    }
  };
  const clients = [loop(), loop(), loop()];
  for (const svc of ['cube-api', 'cube-master', 'cubelet', 'cube-proxy', 'cube-net']) {
    await sleep(1500);
    process.kill(pidOf(svc), 'SIGKILL');
    await sleep(300);
    cube('up', '--data', data, '--port', String(port), '--pool-size', '2');
  }
  await sleep(1500);
  stop = true;
  await Promise.all(clients);
  console.log(`${stats.rounds} rounds completed, ${stats.failed} failed while services were down`);
  assert.ok(stats.rounds > 5, 'the clients made no progress');

  const listed = (await Sandbox.list().nextItems()).map((x) => x.sandboxId);
  for (const id of told.keys()) assert.ok(listed.includes(id), `sandbox ${id} a client was told exists is gone`);
  for (const id of listed) {
    const s = await Sandbox.connect(id);
    assert.equal((await s.commands.run('echo alive')).stdout, 'alive\n', `listed sandbox ${id} does not answer`);
    await s.kill();
  }
  assert.deepEqual((await Sandbox.list().nextItems()).map((x) => x.sandboxId), []);

  cube('down', '--data', data, '--port', String(port));
  assertNothingLeft(data, port);
});
