// A cluster on one machine, started the way an operator tries one (deploy/cube up --cluster): mariadb as the
// shared store, redis for routes, two cube-masters, two cube-apis sharing one port, three nodes (cubelet +
// cube-net + cube-proxy) each in a network namespace of its own, an entry proxy that forwards to the node
// proxies. Driven by the real E2B SDK through the shared addresses.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Sandbox, SandboxNotFoundError, NotFoundError, RateLimitError } from 'e2b';

const root = process.env.CUBE_ROOT || new URL('../..', import.meta.url).pathname;
// shares the single-node test's data dir for its cached templates; the cluster's own state lives beside them
const data = process.env.CUBE_CLUSTER_DATA || '/var/lib/cube-e2e';
const port = Number(process.env.CUBE_CLUSTER_PORT || 3510);
// orphans (a sandbox a node runs with no record) are killed after 4 s here, not a minute, to test it in time
const cube = (...args) => execFileSync(`${root}/deploy/cube`, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, CUBE_MASTER_ORPHAN_AFTER_MS: '4000' } });
const redisCli = (...args) => execFileSync('redis-cli', ['-s', `${data}/redis.sock`, ...args], { encoding: 'utf8' }).trim();
const upOnly = () => cube('up', '--cluster', '--nodes', '3', '--data', data, '--port', String(port), '--pool-size', '2');
const cli = (master, ...args) =>
  JSON.parse(execFileSync(`${root}/build/cube-master/cubemastercli`, ['--master', `unix:${data}/master-${master}/run/master.sock`, '--json', ...args], { encoding: 'utf8' }));
const cliFails = (master, ...args) => {
  try {
    execFileSync(`${root}/build/cube-master/cubemastercli`, ['--master', `unix:${data}/master-${master}/run/master.sock`, ...args], { encoding: 'utf8', stdio: 'pipe' });
    return null;
  } catch (e) {
    return e.stderr;
  }
};
// up, then both masters hear from every node (a restarted master learns them from the next heartbeats)
const up = async () => {
  const out = upOnly();
  for (let i = 0; i < 100; i++) {
    if ([1, 2].every((m) => cli(m, 'node', 'list').filter((n) => n.state === 'ready').length === 3)) return out;
    await sleep(100);
  }
  throw new Error('the masters did not see all three nodes ready');
};
const pidOf = (name) => Number(readFileSync(`${data}/run/${name}.pid`, 'utf8'));
const nodeOf = (id, master = 1) => cli(master, 'sandbox', 'info', id).node;
const nodes = () => Object.fromEntries(cli(2, 'node', 'list').map((n) => [n.node, n.state]));
const gone = async (id) => {
  try {
    await Sandbox.getInfo(id);
    return false;
  } catch (e) {
    if (e instanceof SandboxNotFoundError || e instanceof NotFoundError || /not found|gone/i.test(e.message)) return true;
    throw e;
  }
};

before(async () => {
  cube('down', '--data', data, '--port', String(port)); // an earlier run's leftovers, drained nodes included
  for (let k = 1; k <= 3; k++) rmSync(`${data}/node-${k}/draining`, { force: true });
  const out = await up();
  for (const m of out.matchAll(/^export (\w+)=(.*)$/gm)) process.env[m[1]] = m[2];
  assert.equal(process.env.E2B_API_URL, `http://127.0.0.1:${port}`);
});

after(() => {
  cube('down', '--data', data, '--port', String(port));
});

test('creates spread across nodes; both masters answer for every sandbox; commands reach each node', async () => {
  const sbs = [];
  try {
    for (let i = 0; i < 6; i++) sbs.push(await Sandbox.create());
    const where = new Set();
    for (const s of sbs) {
      const n1 = nodeOf(s.sandboxId, 1), n2 = nodeOf(s.sandboxId, 2);
      assert.equal(n1, n2);
      where.add(n1);
      const r = await s.commands.run('hostname');
      assert.equal(r.stdout.trim(), s.sandboxId);
    }
    assert.ok(where.size >= 2, `all sandboxes landed on ${[...where]}`);
    // a signed file URL names no sandbox: the entry proxy finds it by its signature, on whichever node
    for (const s of sbs) {
      const form = new FormData();
      form.append('file', new Blob([`to ${s.sandboxId}`]), 'f.txt');
      const up = await fetch(await s.uploadUrl('/tmp/signed.txt'), { method: 'POST', body: form });
      assert.equal(up.status, 200, await up.text());
      assert.equal(await (await fetch(await s.downloadUrl('/tmp/signed.txt'))).text(), `to ${s.sandboxId}`);
    }
    // the entry proxy forwarded each one to its node's proxy, which reached the sandbox
    const entry = await (await fetch(`${process.env.E2B_SANDBOX_URL}/metrics`)).text();
    assert.match(entry, /^cube_proxy_forwarded_total [1-9]/m);
    // it found the node proxies in redis, where every heartbeat leaves a key that expires with the node
    assert.match(entry, /^cube_proxy_node_lookups_total\{source="redis"\} [1-9]/m);
    for (const n of where) {
      const ttl = Number(redisCli('PTTL', `cube:node:${n}`));
      assert.ok(ttl > 0 && ttl <= 15000, `cube:node:${n} expires in ${ttl} ms, not within the lost window`);
    }
    for (const n of where) {
      const k = n.split('-')[1];
      const text = await (await fetch(`http://10.${40 + (port % 50)}.${k}.2:${port + 1}/metrics`)).text();
      assert.match(text, /^cube_proxy_connections_total [1-9]/m, `node ${n}'s proxy relayed nothing`);
      // those hops came over mutual TLS: one that comes plain is refused
      const plain = await fetch(`http://10.${40 + (port % 50)}.${k}.2:${port + 1}/health`, {
        headers: { 'E2b-Sandbox-Id': sbs[0].sandboxId, 'E2b-Sandbox-Port': '49983', 'X-Cube-Hop': '1' },
      });
      assert.equal(plain.status, 403, `node ${n}'s proxy took a plain hop`);
    }
  } finally {
    for (const s of sbs) await s.kill();
  }
});

test('a key\'s sandbox limit holds across both masters and apis: a burst of 10 for a key of 3 makes 3', async () => {
  const made = cli(1, 'key', 'create', 'cluster-limited', '--max-sandboxes', '3');
  const mine = [];
  try {
    // new connections each: the kernel spreads them over both apis, and each api over the masters
    const burst = await Promise.allSettled(Array.from({ length: 10 }, () => Sandbox.create({ apiKey: made.key })));
    for (const r of burst) if (r.status === 'fulfilled') mine.push(r.value);
    assert.equal(mine.length, 3, burst.filter((r) => r.status === 'rejected').map((r) => r.reason.message).join('; '));
    assert.ok(burst.every((r) => r.status === 'fulfilled' || r.reason instanceof RateLimitError));
    assert.equal(cli(2, 'key', 'list').find((k) => k.keyID === made.keyID).sandboxes, 3);
    await mine.pop().kill();
    mine.push(await Sandbox.create({ apiKey: made.key }));
  } finally {
    for (const s of mine) await s.kill();
    assert.equal(cliFails(1, 'key', 'revoke', made.keyID), null);
  }
});

test('a volume is held by one node: its sandboxes run there and share its files; a snapshot too, recorded in the store', async () => {
  const { Volume } = await import('e2b');
  const vol = await Volume.create(`cluster-vol-${Date.now()}`);
  const sbs = [];
  try {
    await vol.writeFile('/hello.txt', 'from the volume api');
    for (let i = 0; i < 3; i++) sbs.push(await Sandbox.create({ volumeMounts: { '/v': vol } }));
    const where = new Set(sbs.map((s) => nodeOf(s.sandboxId)));
    assert.equal(where.size, 1, `a volume's sandboxes on ${[...where]}`);
    for (const s of sbs) assert.equal(await s.files.read('/v/hello.txt'), 'from the volume api');
    await sbs[2].files.write('/v/back.txt', 'from a sandbox');
    assert.equal(await vol.readFile('/back.txt'), 'from a sandbox');
    // a snapshot is its node's files and a record in the shared store: either master lists it at once
    const snap = await Sandbox.createSnapshot(sbs[0].sandboxId);
    const listed = await sbs[0].listSnapshots().nextItems();
    assert.ok(listed.some((s) => s.snapshotId === snap.snapshotId), JSON.stringify(listed));
    assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), true);
    assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), false);
  } finally {
    for (const s of sbs) await s.kill();
    await Volume.destroy(vol.volumeId).catch(() => {});
  }
});

test('a template built on one node reaches every node as a copy, and is deleted from every node', async () => {
  const { Template } = await import('e2b');
  const name = `cluster-built-${process.pid}`;
  const mark = `built-${Date.now().toString(36)}`;
  await Template.build(Template().fromTemplate('base').runCmd(`echo ${mark} > /tmp/mark`), name);
  const holders = async () => {
    const res = await fetch(`${process.env.E2B_API_URL}/nodes`, { headers: { 'X-API-KEY': process.env.E2B_API_KEY } });
    return (await res.json()).filter((n) => n.pools.some((p) => p.templateID === name)).map((n) => n.nodeID);
  };
  let on = [];
  for (let i = 0; i < 120 && on.length < 3; i++) { on = await holders(); if (on.length < 3) await sleep(500); }
  assert.equal(on.length, 3, `the build is on ${on} only`);
  const sbs = [];
  try {
    for (let i = 0; i < 6; i++) sbs.push(await Sandbox.create(name));
    const where = new Set(sbs.map((s) => nodeOf(s.sandboxId)));
    assert.ok(where.size >= 2, `all its sandboxes on ${[...where]}`);
    for (const s of sbs) assert.equal((await s.commands.run('cat /tmp/mark')).stdout, `${mark}\n`);
  } finally {
    for (const s of sbs.splice(0)) await s.kill();
  }
  // a rebuild (on whichever node runs it) and a tagged build reach every node too: each node serves the
  // newest build of the name, and the tag's
  const served = async (id) => {
    const res = await fetch(`${process.env.E2B_API_URL}/nodes`, { headers: { 'X-API-KEY': process.env.E2B_API_KEY } });
    return (await res.json()).map((n) => n.pools.find((p) => p.templateID === id)?.buildID);
  };
  const first = new Set(await served(name));
  const converged = async (id, not) => {
    let b = [];
    for (let i = 0; i < 120; i++) {
      b = await served(id);
      if (b.length === 3 && b.every((x) => x && x === b[0] && !not.has(x))) return b[0];
      await sleep(500);
    }
    assert.fail(`${id}: the nodes serve ${JSON.stringify(b)}`);
  };
  const mark2 = `rebuilt-${Date.now().toString(36)}`, mark3 = `tagged-${Date.now().toString(36)}`;
  await Template.build(Template().fromTemplate('base').runCmd(`echo ${mark2} > /tmp/mark`), name);
  await converged(name, first);
  await Template.build(Template().fromTemplate('base').runCmd(`echo ${mark3} > /tmp/mark`), `${name}:v2`);
  await converged(`${name}:v2`, new Set());
  try {
    for (let i = 0; i < 6; i++) sbs.push(await Sandbox.create(i % 2 ? `${name}:v2` : name));
    const where = new Set(sbs.map((s) => nodeOf(s.sandboxId)));
    assert.ok(where.size >= 2, `all its sandboxes on ${[...where]}`);
    for (let i = 0; i < 6; i++) assert.equal((await sbs[i].commands.run('cat /tmp/mark')).stdout, `${i % 2 ? mark3 : mark2}\n`);
  } finally {
    for (const s of sbs) await s.kill();
  }
  const del = await fetch(`${process.env.E2B_API_URL}/templates/${name}`, { method: 'DELETE', headers: { 'X-API-KEY': process.env.E2B_API_KEY } });
  assert.equal(del.status, 204, await del.text());
  assert.deepEqual(await holders(), []);
  await assert.rejects(Sandbox.create(name));
});

test('kill -9 of one master under a create loop loses no sandbox record', async () => {
  const made = [];
  let failed = 0;
  try {
    for (let i = 0; i < 12; i++) {
      if (i === 4) process.kill(pidOf('master-1'), 'SIGKILL');
      try {
        made.push(await Sandbox.create());
      } catch {
        failed++; // a create in flight on the master that died; the client is told, nothing is recorded
      }
    }
    assert.ok(made.length >= 8, `only ${made.length} creates succeeded (${failed} failed)`);
    for (const s of made) {
      assert.equal(cli(2, 'sandbox', 'info', s.sandboxId).sandboxID, s.sandboxId);
      assert.equal((await s.commands.run('echo ok')).stdout, 'ok\n');
    }
  } finally {
    await up(); // brings master-1 back
    for (const s of made) await s.kill();
  }
});

test('either api answers for any sandbox: one killed, the other serves the shared port', async () => {
  const s = await Sandbox.create();
  try {
    for (const api of ['api-1', 'api-2']) {
      process.kill(pidOf(api), 'SIGKILL');
      await sleep(200);
      const info = await Sandbox.getInfo(s.sandboxId); // a new connection lands on the api still listening
      assert.equal(info.sandboxId, s.sandboxId);
      assert.equal((await s.commands.run('echo ok')).stdout, 'ok\n');
      await up();
    }
  } finally {
    await s.kill();
  }
});

test('drain keeps new sandboxes off a node; remove refuses a live node', async () => {
  const sbs = [];
  try {
    cli(1, 'node', 'drain', 'node-1');
    cli(2, 'node', 'drain', 'node-2');
    await sleep(1500); // both masters hear it in the next heartbeat
    for (let i = 0; i < 3; i++) sbs.push(await Sandbox.create());
    for (const s of sbs) assert.equal(nodeOf(s.sandboxId), 'node-3');
    assert.equal(nodes()['node-1'], 'draining');
    assert.match(cliFails(1, 'node', 'remove', 'node-3') || '', /alive/);
  } finally {
    cli(1, 'node', 'undrain', 'node-1');
    cli(1, 'node', 'undrain', 'node-2');
    for (const s of sbs) await s.kill();
  }
});

test('a lost node: its sandboxes are reported gone within the heartbeat window, and killed when it returns', async () => {
  cli(1, 'node', 'drain', 'node-1');
  cli(1, 'node', 'drain', 'node-2');
  await sleep(1500);
  const victims = [await Sandbox.create(), await Sandbox.create()];
  cli(1, 'node', 'undrain', 'node-1');
  cli(1, 'node', 'undrain', 'node-2');
  for (const s of victims) assert.equal(nodeOf(s.sandboxId), 'node-3');
  const t0 = Date.now();
  process.kill(pidOf('node-3'), 'SIGKILL');
  for (const s of victims) {
    while (!(await gone(s.sandboxId))) {
      assert.ok(Date.now() - t0 < 20000, 'a lost node\'s sandbox was still reported after 20 s (window: 15 s)');
      await sleep(200);
    }
  }
  const took = Date.now() - t0;
  console.log(`# lost node's sandboxes reported gone after ${took} ms`);
  // each master judges a node by the heartbeats it heard: the one asked here may call it lost a moment later
  let state = nodes()['node-3'];
  for (let i = 0; i < 15 && state !== 'lost'; i++) {
    await sleep(200);
    state = nodes()['node-3'];
  }
  assert.equal(state, 'lost');
  // its liveness key in redis expired with it (set at each heartbeat for the lost window)
  let alive = redisCli('EXISTS', 'cube:node:node-3');
  for (let i = 0; i < 20 && alive !== '0'; i++) {
    await sleep(200);
    alive = redisCli('EXISTS', 'cube:node:node-3');
  }
  assert.equal(alive, '0', 'a lost node still has a liveness key in redis');
  // new sandboxes go elsewhere meanwhile
  const other = await Sandbox.create();
  assert.notEqual(nodeOf(other.sandboxId), 'node-3');
  await other.kill();
  // the node returns: its cubelet adopts what it ran, the masters tell it those are gone, it kills them
  await up();
  assert.equal(nodes()['node-3'], 'ready');
  let left = -1;
  for (let i = 0; i < 50; i++) {
    // the sandboxes node-3 hands out (its adopted ones until the masters have them killed; not its pool)
    left = cli(2, 'node', 'list').find((n) => n.node === 'node-3').running;
    if (left === 0) break;
    await sleep(200);
  }
  assert.equal(left, 0, 'the returning node still runs sandboxes users were told are gone');
  for (const s of victims) assert.ok(await gone(s.sandboxId));
});

test('routes come from redis; a redis restart does not break routing', async () => {
  const metric = async (source) => {
    const text = await (await fetch(`${process.env.E2B_SANDBOX_URL}/metrics`)).text();
    const m = text.match(new RegExp(`^cube_proxy_route_lookups_total\\{source="${source}"\\} (\\d+)`, 'm'));
    return m ? Number(m[1]) : 0;
  };
  const s = await Sandbox.create();
  try {
    const before = await metric('redis');
    assert.equal((await s.commands.run('echo one')).stdout, 'one\n');
    assert.ok((await metric('redis')) > before, 'the proxy did not take the route from redis');
    process.kill(pidOf('redis'), 'SIGKILL');
    const fallbacks = await metric('master');
    assert.equal((await s.commands.run('echo two')).stdout, 'two\n');
    assert.ok((await metric('master')) > fallbacks, 'without redis the proxy did not ask a master');
    await up(); // redis back, empty
    assert.equal((await s.commands.run('echo three')).stdout, 'three\n');
    // the masters rebuild the routes at their next write; after it the proxy reads them from redis again
    await s.setTimeout(120_000);
    const again = await metric('redis');
    assert.equal((await s.commands.run('echo four')).stdout, 'four\n');
    assert.ok((await metric('redis')) > again, 'routes were not rebuilt in redis');
  } finally {
    await s.kill();
  }
});

test('a sandbox a node runs without a record (its create died with a master) is killed', async () => {
  const s = await Sandbox.create();
  const node = nodeOf(s.sandboxId);
  // the record vanishes as if the master had died before writing it
  execFileSync('mariadb', ['--no-defaults', `--socket=${data}/mysql/mysql.sock`, '-uroot', 'cube', '-e',
    `DELETE FROM sandboxes WHERE sandbox_id='${s.sandboxId}'`]);
  const running = () => cli(2, 'node', 'list').find((n) => n.node === node).running;
  await sleep(1200); // a heartbeat that counts it
  const before = running();
  assert.ok(before >= 1);
  let now = before;
  for (let i = 0; i < 100 && now === before; i++) {
    await sleep(200);
    now = running();
  }
  assert.equal(now, before - 1, `node ${node} still runs the orphan`);
});

test('between machines, mutual TLS: a master on TCP serves the cluster\'s certificates and refuses others', async () => {
  // the identities deploy/cube up --cluster made; a third master on TCP, as on a machine of its own
  const pki = `${data}/tls`;
  for (const f of ['ca.pem', 'master-1/cert.pem', 'node-1/key.pem', 'operator/cert.pem']) assert.ok(existsSync(`${pki}/${f}`), `${f} was not made`);
  execFileSync(`${root}/deploy/tls-certs`, [`${data}/tls-rogue`, 'operator', 'IP:127.0.0.1']);
  const tcp = `127.0.0.1:${port + 30}`;
  mkdirSync(`${data}/master-3/run`, { recursive: true });
  const m3 = spawn(`${root}/build/cube-master/cube-master`, ['--data', `${data}/master-3`, '--listen', tcp,
    '--store', `mysql://root@unix(${data}/mysql/mysql.sock)/cube`, '--tls-dir', `${pki}/master-1`], { stdio: 'ignore' });
  const ask = (tls) => {
    try {
      return { ok: true, out: execFileSync(`${root}/build/cube-master/cubemastercli`, ['--master', tcp, '--tls-dir', tls, '--json', 'sandbox', 'list'], { encoding: 'utf8', stdio: 'pipe' }) };
    } catch (e) {
      return { ok: false, out: String(e.stderr) };
    }
  };
  try {
    let good = { ok: false };
    for (let i = 0; i < 50 && !good.ok; i++) {
      await sleep(100);
      good = ask(`${pki}/operator`);
    }
    assert.ok(good.ok, `the cluster's operator was refused: ${good.out}`);
    const rogue = ask(`${data}/tls-rogue/operator`);
    assert.ok(!rogue.ok, 'a certificate from another CA was served');
    assert.match(rogue.out, /unavailable|handshake|certificate/i);
  } finally {
    const exited = new Promise((resolve) => m3.on('exit', resolve));
    m3.kill('SIGTERM');
    await exited;
    rmSync(`${data}/tls-rogue`, { recursive: true, force: true });
  }
});

test('sandbox changes are published on redis (cube:events)', async () => {
  const sub = spawn('redis-cli', ['-s', `${data}/redis.sock`, 'SUBSCRIBE', 'cube:events']);
  let out = '';
  sub.stdout.on('data', (d) => (out += d));
  try {
    await sleep(300);
    const s = await Sandbox.create();
    await s.kill();
    for (let i = 0; i < 50 && !out.includes(`"sandboxID":"${s.sandboxId}","state":"deleted"`); i++) await sleep(100);
    assert.match(out, new RegExp(`"sandboxID":"${s.sandboxId}","state":"running","node":"node-\\d"`));
    assert.ok(out.includes(`"sandboxID":"${s.sandboxId}","state":"deleted"`), out);
  } finally {
    sub.kill();
  }
});

test('deploy/cube down removes the cluster', () => {
  cube('down', '--data', data, '--port', String(port));
  const procs = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes(data));
  assert.deepEqual(procs, [], 'processes of the cluster survived');
  const ns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  assert.ok(!ns.includes(`cube-${port}-n`), 'a node namespace survived');
  const mounts = readFileSync('/proc/self/mounts', 'utf8');
  assert.ok(!mounts.includes(`${data}/`), 'a mount survived');
});
