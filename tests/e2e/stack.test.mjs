// The whole single-node stack, started the way a user starts it (deploy/cube up), driven by the real E2B SDKs
// with nothing changed but the URLs, then stopped (deploy/cube down) with nothing left behind.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, statfsSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { lookup } from 'node:dns/promises';
import { networkInterfaces } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { Sandbox, SandboxNotFoundError, AuthenticationError, ServiceBusyError, RateLimitError, Template } from 'e2b';
import { Sandbox as CodeSandbox } from '@e2b/code-interpreter';
import { assertNothingLeft } from './leftovers.mjs';

const root = process.env.CUBE_ROOT || new URL('../..', import.meta.url).pathname;
// templates are built once and cached in this data dir across runs
const data = process.env.CUBE_STACK_DATA || '/var/lib/cube-e2e';
const port = Number(process.env.CUBE_STACK_PORT || 3310);
const cube = (...args) => execFileSync(`${root}/deploy/cube`, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });

before(() => {
  const out = cube('up', '--data', data, '--port', String(port), '--pool-size', '2');
  for (const m of out.matchAll(/^export (\w+)=(.*)$/gm)) process.env[m[1]] = m[2];
  assert.equal(process.env.E2B_API_URL, `http://127.0.0.1:${port}`);
  delete process.env.E2B_DEBUG;
});

after(() => {
  cube('down', '--data', data);
});

test('create with metadata and envs; getInfo; commands and files', async () => {
  const sbx = await Sandbox.create({ metadata: { suite: 'basic', who: 'stack test' }, envs: { GREETING: 'hello' } });
  try {
    const info = await sbx.getInfo();
    assert.equal(info.sandboxId, sbx.sandboxId);
    assert.equal(info.templateId, 'base');
    assert.equal(info.state, 'running');
    assert.deepEqual(info.metadata, { suite: 'basic', who: 'stack test' });
    const r = await sbx.commands.run('echo "$GREETING from $(id -un) in $(pwd) on $(hostname)"');
    assert.equal(r.stdout, `hello from user in /home/user on ${sbx.sandboxId}\n`);
    await sbx.files.write('notes/today.txt', 'written through cube-proxy');
    assert.equal(await sbx.files.read('/home/user/notes/today.txt'), 'written through cube-proxy');
    const py = await sbx.commands.run('python3 -c "print(6*7)"');
    assert.equal(py.stdout, '42\n');
    // a command starts with no signal blocked and SIGINT, SIGQUIT not ignored (as a login shell's would),
    // whatever the node's services inherited from the shell that started them
    const st = (await sbx.commands.run("grep -E '^Sig(Blk|Ign)' /proc/self/status")).stdout;
    const mask = (name) => BigInt('0x' + new RegExp(`${name}:\\s*([0-9a-f]+)`).exec(st)[1]);
    assert.equal(mask('SigBlk'), 0n, st);
    assert.equal(mask('SigIgn') & 0x6n, 0n, st);
    const logs = await (await fetch(`${process.env.E2B_API_URL}/v2/sandboxes/${sbx.sandboxId}/logs`, { headers: { 'X-API-KEY': process.env.E2B_API_KEY } })).json();
    assert.ok(logs.logs.some((e) => e.message === 'process started' && /python3|bash/.test(e.fields.cmd)), JSON.stringify(logs).slice(0, 500));
    assert.ok(logs.logs.some((e) => e.message === 'agent ready'));
    const metrics = await sbx.getMetrics();
    assert.ok(metrics.length >= 1);
    assert.ok(metrics[0].memUsed > 0 && metrics[0].diskTotal > 0 && metrics[0].cpuCount >= 1, JSON.stringify(metrics));
    // its history: the node samples it every 5 s; start/end select within it
    let life = metrics;
    for (let i = 0; i < 60 && life.length < 3; i++) {
      await sleep(250);
      life = await sbx.getMetrics();
    }
    assert.ok(life.length >= 3, JSON.stringify(life));
    for (let i = 1; i < life.length; i++) assert.ok(life[i].timestamp >= life[i - 1].timestamp);
    const recent = await sbx.getMetrics({ start: new Date(Date.now() - 2000) });
    assert.ok(recent.length >= 1 && recent.length < life.length, `${recent.length} of ${life.length}`);
  } finally {
    await sbx.kill();
  }
});

test('a sandbox sees its own memory and uptime, not the node\'s (lxcfs)', async () => {
  const sbx = await Sandbox.create();
  try {
    const mem = (await sbx.commands.run('grep MemTotal /proc/meminfo')).stdout;
    assert.match(mem, /^MemTotal:\s+524288 kB/m, mem); // its 512 MB limit
    const free = (await sbx.commands.run('free -m | awk \'/^Mem:/ {print $2}\'')).stdout.trim();
    assert.equal(free, '512');
    const up = Number((await sbx.commands.run('cut -d" " -f1 /proc/uptime')).stdout);
    assert.ok(up < 3600, `uptime ${up} s: the node's, not the sandbox's`);
  } finally {
    await sbx.kill();
  }
});

test('list: filters and paging', async () => {
  const made = [];
  for (let i = 0; i < 3; i++) made.push(await Sandbox.create({ metadata: { suite: 'paging', n: String(i) } }));
  try {
    const pager = Sandbox.list({ query: { metadata: { suite: 'paging' }, state: ['running'] }, limit: 2 });
    const first = await pager.nextItems();
    assert.equal(first.length, 2);
    assert.equal(pager.hasNext, true);
    const second = await pager.nextItems();
    assert.equal(second.length, 1);
    assert.deepEqual([...first, ...second].map((s) => s.sandboxId).sort(), made.map((s) => s.sandboxId).sort());
    const one = await Sandbox.list({ query: { metadata: { suite: 'paging', n: '1' } } }).nextItems();
    assert.deepEqual(one.map((s) => s.sandboxId), [made[1].sandboxId]);
    const none = await Sandbox.list({ query: { metadata: { suite: 'paging' }, state: ['paused'] } }).nextItems();
    assert.equal(none.length, 0);
  } finally {
    for (const s of made) await s.kill();
  }
});

test('setTimeout, pause, connect keeps files and processes, kill twice', async () => {
  const sbx = await Sandbox.create();
  await sbx.setTimeout(120_000);
  const info = await sbx.getInfo();
  const left = info.endAt.getTime() - Date.now();
  assert.ok(left > 100_000 && left <= 121_000, `endAt is ${left} ms away`);
  await sbx.files.write('/tmp/before-pause.txt', 'kept');
  const bg = await sbx.commands.run('sleep 600', { background: true });
  assert.equal(await Sandbox.pause(sbx.sandboxId), true);
  assert.equal(await Sandbox.pause(sbx.sandboxId), false); // already paused: 409
  assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'paused');
  const again = await Sandbox.connect(sbx.sandboxId);
  assert.equal((await again.getInfo()).state, 'running');
  assert.equal(await again.files.read('/tmp/before-pause.txt'), 'kept');
  assert.ok((await again.commands.list()).some((p) => p.pid === bg.pid), 'the background process did not survive');
  assert.equal(await again.kill(), true);
  assert.equal(await again.kill(), false);
  await assert.rejects(Sandbox.getInfo(sbx.sandboxId), SandboxNotFoundError);
});

test('kill, pause and connect raced on 20 sandboxes at once: the kills win, none is left listed', async () => {
  const made = await Promise.all(Array.from({ length: 20 }, () => Sandbox.create({ metadata: { suite: 'race' } })));
  const outcomes = await Promise.allSettled(
    made.flatMap((s) => [s.kill(), Sandbox.pause(s.sandboxId), Sandbox.connect(s.sandboxId)]),
  );
  // each client got an answer (success, or a clear 404/409 for the loser), never a crash or a hang
  for (const o of outcomes) if (o.status === 'rejected') assert.ok(o.reason instanceof Error, String(o.reason));
  const left = (await Sandbox.list({ query: { metadata: { suite: 'race' }, state: ['running', 'paused'] } }).nextItems()).map((x) => x.sandboxId);
  assert.deepEqual(left, [], 'sandboxes killed in the race are still listed');
  for (const s of made) await assert.rejects(Sandbox.getInfo(s.sandboxId), SandboxNotFoundError);
});

test('fork: children start from the parent\'s files and env vars, and diverge', async () => {
  const parent = await Sandbox.create({ envs: { FROM: 'the parent' } });
  try {
    await parent.files.write('/home/user/state.txt', 'from the parent');
    const kids = await Sandbox.fork(parent.sandboxId, { count: 2 });
    assert.equal(kids.length, 2);
    for (const k of kids) assert.ok(!(k instanceof Error), String(k));
    for (const k of kids) assert.equal(await k.files.read('/home/user/state.txt'), 'from the parent');
    for (const k of kids) assert.equal((await k.commands.run('echo "$FROM"')).stdout, 'the parent\n');
    await kids[0].files.write('/home/user/state.txt', 'child 0');
    assert.equal(await kids[1].files.read('/home/user/state.txt'), 'from the parent');
    assert.equal(await parent.files.read('/home/user/state.txt'), 'from the parent');
    assert.equal((await parent.getInfo()).state, 'running');
    for (const k of kids) await k.kill();
  } finally {
    await parent.kill();
  }
});

test('a cubelet killed with SIGKILL and started again adopts its running sandboxes', async () => {
  const sbx = await Sandbox.create();
  await sbx.files.write('/tmp/adopt.txt', 'still here');
  const pid = Number(readFileSync(`${data}/run/cubelet.pid`, 'utf8').trim());
  process.kill(pid, 'SIGKILL');
  for (let i = 0; i < 100; i++) {
    try { process.kill(pid, 0); await sleep(50); } catch { break; }
  }
  cube('up', '--data', data, '--port', String(port), '--pool-size', '2'); // starts what is not running: the cubelet
  assert.equal(await sbx.files.read('/tmp/adopt.txt'), 'still here');
  // lifecycle calls reach the sandbox through the new cubelet
  let paused = false;
  for (let i = 0; i < 50 && !paused; i++) {
    try { paused = await Sandbox.pause(sbx.sandboxId); } catch { await sleep(100); }
  }
  assert.equal(paused, true);
  const again = await Sandbox.connect(sbx.sandboxId);
  assert.equal(await again.files.read('/tmp/adopt.txt'), 'still here');
  assert.equal(await again.kill(), true);
});

// cubelet again, with env (its settings, CUBE_CUBELET_*) over this process's; SIGKILL: the next cubelet adopts
// the running sandboxes (a SIGTERM stops them)
const restartCubelet = (env) => {
  const pid = Number(readFileSync(`${data}/run/cubelet.pid`, 'utf8').trim());
  process.kill(pid, 'SIGKILL');
  for (let i = 0; i < 200; i++) {
    try { process.kill(pid, 0); execFileSync('sleep', ['0.05']); } catch { break; }
  }
  execFileSync(`${root}/deploy/cube`, ['up', '--data', data, '--port', String(port), '--pool-size', '2'],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
};

test('a node out of memory for sandboxes refuses creates in words; all sandboxes together are capped below its memory', async () => {
  const meminfo = (k) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/meminfo', 'utf8'))[1]);
  const cap = '/sys/fs/cgroup/memory/cube/memory.limit_in_bytes';
  const v1 = (() => { try { readFileSync(cap); return true; } catch { return false; } })();
  if (v1) { // what cubelet's default reserve leaves all sandboxes: the node's memory less 1/16 (256 MB..2 GB)
    const total = meminfo('MemTotal') * 1024, reserve = Math.min(Math.max(Math.floor(total / 16 / 2 ** 20), 256), 2048) * 2 ** 20;
    assert.ok(Math.abs(Number(readFileSync(cap, 'utf8')) - (total - reserve)) < 4096, `cap ${readFileSync(cap, 'utf8')} of ${total}`);
  }
  const running = await Sandbox.create();
  const left = () => JSON.parse(execFileSync(`${root}/build/cube-master/cubemastercli`, ['--data', data, '--json', 'node', 'list'], { encoding: 'utf8' }))[0].memory_left_mb;
  try {
    // the node keeps all but ~256 MB for itself: a 512 MB sandbox may not start, the running one goes on;
    // the operator sees what is left (cubemastercli node list) once the node's next heartbeat says so
    restartCubelet({ CUBE_CUBELET_MEMORY_RESERVE_MB: String(Math.floor(meminfo('MemAvailable') / 1024) - 256) });
    let mb = left();
    for (let i = 0; i < 50 && !(mb < 512); i++) { await sleep(100); mb = left(); }
    assert.ok(mb < 512, `node list shows ${mb} MB left for sandboxes`);
    await assert.rejects(Sandbox.create(), (e) => {
      assert.ok(e instanceof ServiceBusyError, `${e.constructor.name}: ${e.message}`);
      assert.match(e.message, /out of memory for sandboxes: \d+ MB left for them .* may use 512 MB; kill sandboxes you no longer need/);
      return true;
    });
    assert.equal((await running.commands.run('echo on')).stdout, 'on\n');
  } finally {
    restartCubelet({});
  }
  const again = await Sandbox.create();
  assert.equal((await again.commands.run('echo on')).stdout, 'on\n');
  await Promise.all([again.kill(), running.kill()]);
});

test('a node whose disk cannot hold what its sandboxes could write bounds them: ENOSPC to the writer, nothing lost', async (t) => {
  // sandboxes' disks (1 GB each) take the node's disk as they are written: with the node keeping all but
  // 700 MB of its free space, two sandboxes could write more than that, so each may write an equal share of
  // what is left (re-split every second: a lone writer takes more as long as the node keeps its reserve)
  const freeMb = () => Math.floor(statfsSync(data).bavail * statfsSync(data).bsize / 2 ** 20);
  if (freeMb() < 2048) return t.skip(`the node has ${freeMb()} MB free: too little to leave 700 MB of it to sandboxes`);
  const [a, b] = await Promise.all([Sandbox.create(), Sandbox.create()]);
  const reserve = freeMb() - 700;
  try {
    restartCubelet({ CUBE_CUBELET_DISK_RESERVE_MB: String(reserve) });
    const avail = async () => Number((await a.commands.run('df -m --output=avail / | tail -1')).stdout.trim());
    let mb = await avail();
    for (let i = 0; i < 100 && mb > 400; i++) { await sleep(200); mb = await avail(); }
    assert.ok(mb <= 400, `a's disk still shows ${mb} MB free`);
    const r = await a.commands.run('yes 0123456789abcdef | dd of=/tmp/big bs=1M count=1024 iflag=fullblock conv=fsync; echo rc=$?; sync; stat -c %s /tmp/big', { timeoutMs: 120000 });
    assert.match(r.stdout + r.stderr, /No space left on device/);
    assert.doesNotMatch(r.stdout, /rc=0/);
    const wrote = Number(r.stdout.trim().split('\n').pop());
    assert.ok(wrote > 300 * 2 ** 20, `wrote ${wrote}`); // its share, re-split as the node fills: most of it
    assert.ok(freeMb() >= reserve - 64, `the node's disk went below its reserve: ${freeMb()} MB free, ${reserve} kept`);
    // what it wrote reads back whole (past its 512 MB of memory, from the disk); the other sandbox answers
    assert.equal((await a.commands.run('yes 0123456789abcdef | cmp -n $(stat -c %s /tmp/big) /tmp/big - && echo same')).stdout, 'same\n');
    assert.equal((await b.commands.run('echo on')).stdout, 'on\n');
  } finally {
    restartCubelet({});
  }
  // the node's room back: the bounds go (the new cubelet lifts what the one before set)
  let mb = 0;
  for (let i = 0; i < 100 && mb < 900; i++) {
    mb = Number((await a.commands.run('rm -f /tmp/big; df -m --output=avail / | tail -1')).stdout.trim());
    if (mb < 900) await sleep(200);
  }
  assert.ok(mb >= 900, `a's disk shows ${mb} MB free after the node has room again`);
  await Promise.all([a.kill(), b.kill()]);
});

test('lifecycle: paused on timeout, resumed by the next request', async () => {
  const sbx = await Sandbox.create({ timeoutMs: 2_000, lifecycle: { onTimeout: 'pause', autoResume: true } });
  await sbx.files.write('/tmp/lifecycle.txt', 'survives the pause');
  let state = 'running';
  for (let i = 0; i < 40 && state !== 'paused'; i++) {
    await sleep(250);
    state = (await Sandbox.getInfo(sbx.sandboxId)).state;
  }
  assert.equal(state, 'paused');
  assert.equal((await Sandbox.getInfo(sbx.sandboxId)).lifecycle.autoResume, true);
  assert.equal(await sbx.files.read('/tmp/lifecycle.txt'), 'survives the pause'); // through cube-proxy: resumes
  assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'running');
  await sbx.kill();
});

test('volumes: a named directory outlives the sandboxes that mount it and is shared', async () => {
  const { Volume } = await import('e2b');
  const vol = await Volume.create(`stack-vol-${Date.now()}`);
  try {
    const a = await Sandbox.create({ volumeMounts: { '/mnt/shared': vol } });
    assert.deepEqual((await a.getInfo()).volumeMounts.map((m) => m.path), ['/mnt/shared']);
    // a filesystem of its own (10 GB by default), not the node's disk: writes past it are ENOSPC, not the node's
    const avail = Number((await a.commands.run('df -m --output=avail /mnt/shared | tail -1')).stdout.trim());
    assert.ok(avail > 9500 && avail <= 10500, `the volume's filesystem has ${avail} MB free`);
    await a.commands.run('echo "written by a" > /mnt/shared/note.txt');
    const b = await Sandbox.create({ volumeMounts: { '/data': vol.name } });
    assert.equal((await b.commands.run('cat /data/note.txt')).stdout, 'written by a\n');
    // each sandbox runs as host uids of its own; the volume's files are the same user in both
    assert.equal((await b.commands.run('stat -c %U:%G /data/note.txt')).stdout, 'user:user\n');
    assert.equal((await b.commands.run('touch /data/from-b && stat -c %U /data/from-b')).stdout, 'user\n');
    await a.kill();
    await b.kill();
    const c = await Sandbox.create({ volumeMounts: { '/again': vol } });
    assert.equal(await c.files.read('/again/note.txt'), 'written by a\n');
    await assert.rejects(Volume.destroy(vol.volumeId)); // still mounted by c
    await c.kill();
    assert.ok((await Volume.list()).some((v) => v.volumeId === vol.volumeId));
    await assert.rejects(Sandbox.create({ volumeMounts: { '/x': 'no-such-volume' } }));
  } finally {
    await Volume.destroy(vol.volumeId).catch(() => {});
  }
  assert.equal((await Volume.list()).some((v) => v.volumeId === vol.volumeId), false);
});

test('volume files without a sandbox: the SDK\'s Volume calls, shared with the sandboxes that mount it', async () => {
  const { Volume, VolumePathNotFoundError } = await import('e2b');
  assert.equal(process.env.E2B_VOLUME_API_URL, `http://127.0.0.1:${port + 5}`);
  const vol = await Volume.create(`stack-files-${Date.now()}`);
  try {
    // written before any sandbox exists, read inside one, as the sandbox's user
    const info = await vol.writeFile('/config/app.json', '{"ok":true}');
    assert.equal(info.type, 'file');
    assert.equal(info.size, 11);
    assert.equal(info.uid, 1000);
    assert.ok(info.mtime instanceof Date && Math.abs(info.mtime - Date.now()) < 120000, String(info.mtime));
    const sbx = await Sandbox.create({ volumeMounts: { '/mnt/v': vol } });
    try {
      assert.equal((await sbx.commands.run('cat /mnt/v/config/app.json; echo; stat -c %U /mnt/v/config/app.json')).stdout, '{"ok":true}\nuser\n');
      // what the sandbox writes, the API reads; a link it plants cannot lead out of the volume
      await sbx.commands.run('mkdir -p /mnt/v/out && seq 1 5 > /mnt/v/out/n.txt && ln -s /etc /mnt/v/etc-link && ln -s ../../../../../../etc/hostname /mnt/v/up');
      assert.equal(await vol.readFile('/out/n.txt'), '1\n2\n3\n4\n5\n');
      await assert.rejects(vol.readFile('/etc-link/hostname'), VolumePathNotFoundError);
      await assert.rejects(vol.readFile('/up'), VolumePathNotFoundError);
      const link = await vol.getInfo('/etc-link');
      assert.equal(link.type, 'symlink');
      assert.equal(link.target, '/etc');
      // a file larger than one call, both ways, byte for byte
      const big = new Uint8Array(3 * 1024 * 1024 + 123);
      for (let i = 0; i < big.length; i++) big[i] = (i * 31 + (i >> 11)) & 255;
      await vol.writeFile('/blob.bin', big.buffer);
      const back = await vol.readFile('/blob.bin', { format: 'bytes' });
      assert.equal(back.length, big.length);
      assert.ok(Buffer.from(back).equals(Buffer.from(big)));
      assert.equal((await sbx.commands.run('stat -c %s /mnt/v/blob.bin')).stdout, `${big.length}\n`);
      // directories, metadata, listing, removal
      await assert.rejects(vol.makeDir('/a/b/c'), VolumePathNotFoundError);
      const dir = await vol.makeDir('/a/b/c', { force: true, mode: 0o700 });
      assert.equal(dir.type, 'directory');
      assert.equal(dir.mode, 0o700);
      assert.equal((await vol.updateMetadata('/out/n.txt', { uid: 0, gid: 0, mode: 0o600 })).mode, 0o600);
      assert.equal((await sbx.commands.run('stat -c "%U %a" /mnt/v/out/n.txt')).stdout, 'root 600\n');
      const top = (await vol.list('/')).map((e) => e.name).sort();
      assert.deepEqual(top, ['a', 'blob.bin', 'config', 'etc-link', 'out', 'up']);
      const deep = (await vol.list('/a', { depth: 3 })).map((e) => e.path).sort();
      assert.deepEqual(deep, ['/a/b', '/a/b/c']);
      assert.equal(await vol.exists('/out/n.txt'), true);
      await vol.remove('/out');
      assert.equal(await vol.exists('/out/n.txt'), false);
      assert.equal((await sbx.commands.run('test -e /mnt/v/out || echo gone')).stdout, 'gone\n');
      await vol.remove('/etc-link');
      assert.equal((await sbx.commands.run('test -d /etc && echo kept')).stdout, 'kept\n');
      await assert.rejects(vol.remove('/'), /root/);
    } finally {
      await sbx.kill();
    }
    // a token is the volume's own; no token is refused
    const other = new Volume(vol.volumeId, vol.name, 'wrong-token');
    await assert.rejects(other.readFile('/config/app.json'), /not this volume's|401/);
    const res = await fetch(`${process.env.E2B_VOLUME_API_URL}/volumecontent/${vol.volumeId}/path?path=/`);
    assert.equal(res.status, 401);
  } finally {
    await Volume.destroy(vol.volumeId).catch(() => {});
  }
  assert.equal((await Volume.list()).some((v) => v.volumeId === vol.volumeId), false);
});

test('snapshots: a sandbox\'s files become a template that new sandboxes start from', async () => {
  const sbx = await Sandbox.create();
  await sbx.files.write('/home/user/project/state.txt', 'snapshotted');
  const snap = await Sandbox.createSnapshot(sbx.sandboxId);
  assert.ok(snap.snapshotId);
  assert.deepEqual(snap.names, [snap.snapshotId]);
  await sbx.files.write('/home/user/project/state.txt', 'changed after');
  const listed = await sbx.listSnapshots().nextItems();
  assert.ok(listed.some((s) => s.snapshotId === snap.snapshotId), JSON.stringify(listed));
  // paged, newest first: a second snapshot comes on the first page of one, the first on the next
  const snap2 = await Sandbox.createSnapshot(sbx.sandboxId);
  const pager = sbx.listSnapshots({ limit: 1 });
  assert.deepEqual((await pager.nextItems()).map((s) => s.snapshotId), [snap2.snapshotId]);
  assert.equal(pager.hasNext, true);
  assert.deepEqual((await pager.nextItems()).map((s) => s.snapshotId), [snap.snapshotId]);
  assert.equal(await Sandbox.deleteSnapshot(snap2.snapshotId), true);
  let child;
  for (let i = 0; i < 50 && !child; i++) { // the node publishes it within a heartbeat
    try { child = await Sandbox.create(snap.snapshotId); } catch { await sleep(200); }
  }
  assert.ok(child, 'no sandbox from the snapshot');
  assert.equal(await child.files.read('/home/user/project/state.txt'), 'snapshotted');
  await assert.rejects(Sandbox.deleteSnapshot(snap.snapshotId)); // in use by child
  await child.kill();
  await sbx.kill();
  assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), true);
  assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), false);
});

test('rollback: a running sandbox returns in place to one of its snapshots, keeping its id, URL, token, envs and volumes', async () => {
  const { Volume } = await import('e2b');
  const vol = await Volume.create(`rb-vol-${Date.now()}`);
  const sbx = await Sandbox.create({ envs: { KEPT: 'yes' }, volumeMounts: { '/mnt/vol': vol }, secure: true });
  const url = process.env.E2B_API_URL;
  const rollback = (body, id = sbx.sandboxId) => fetch(`${url}/sandboxes/${id}/rollback`, {
    method: 'POST', headers: { 'X-API-KEY': process.env.E2B_API_KEY, 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  try {
    await sbx.files.write('/home/user/state.txt', 'at the snapshot');
    const snap = await Sandbox.createSnapshot(sbx.sandboxId);
    await sbx.files.write('/home/user/state.txt', 'after the snapshot');
    await sbx.files.write('/home/user/later.txt', 'made after');
    await sbx.files.write('/mnt/vol/kept.txt', 'in the volume');
    await sbx.commands.run('sleep 600', { background: true });
    const before = (await sbx.getInfo());

    const res = await rollback({ snapshotID: snap.snapshotId });
    assert.equal(res.status, 200, await res.clone().text());
    const info = await res.json();
    assert.equal(info.sandboxID, sbx.sandboxId);
    assert.equal(info.state, 'running');
    // the same Sandbox object (its URL and access token) keeps working
    assert.equal(await sbx.files.read('/home/user/state.txt'), 'at the snapshot');
    assert.equal(await sbx.files.exists('/home/user/later.txt'), false);
    const sleeps = 'n=0; for c in /proc/[0-9]*/comm; do [ "$(cat $c 2>/dev/null)" = sleep ] && n=$((n+1)); done; echo $n';
    const r = await sbx.commands.run(`echo "$KEPT"; ${sleeps}; hostname; cat /mnt/vol/kept.txt`);
    assert.equal(r.stdout, `yes\n0\n${sbx.sandboxId}\nin the volume`);
    const after = await sbx.getInfo();
    assert.equal(after.templateId, before.templateId);
    assert.deepEqual(after.volumeMounts, before.volumeMounts);
    // a paused sandbox rolls back too, and runs after
    await sbx.files.write('/home/user/state.txt', 'again after');
    await sbx.pause();
    const res2 = await rollback({ snapshotID: snap.snapshotId });
    assert.equal(res2.status, 200, await res2.clone().text());
    assert.equal((await res2.json()).state, 'running');
    const again = await Sandbox.connect(sbx.sandboxId);
    assert.equal(await again.files.read('/home/user/state.txt'), 'at the snapshot');
    // bad input: a 400 naming the field; a snapshot of another sandbox or none: refused, the sandbox untouched
    const bad = await rollback({});
    assert.equal(bad.status, 400);
    assert.match((await bad.json()).message, /snapshotID/);
    const other = await Sandbox.create();
    const otherSnap = await Sandbox.createSnapshot(other.sandboxId);
    const wrong = await rollback({ snapshotID: otherSnap.snapshotId });
    assert.equal(wrong.status, 400, await wrong.clone().text());
    assert.match((await wrong.json()).message, /is not of sandbox/);
    assert.match(await (await fetch(`${url}/openapi.yml`)).text(), /\/sandboxes\/\{sandboxID\}\/rollback:/);
    const none = await rollback({ snapshotID: 'no-such-snapshot' });
    assert.equal(none.status, 404);
    assert.equal((await rollback({ snapshotID: snap.snapshotId }, 'nosuchsandbox0000000')).status, 404);
    assert.equal(await sbx.files.read('/home/user/state.txt'), 'at the snapshot');
    // a snapshot a sandbox runs on after its rollback cannot be deleted from under it
    await assert.rejects(Sandbox.deleteSnapshot(snap.snapshotId));
    // the operator's CLI does the same
    const cli = (...args) => execFileSync(`${root}/build/cube-master/cubemastercli`, ['--data', data, ...args], { encoding: 'utf8' });
    await sbx.files.write('/home/user/state.txt', 'before the cli');
    const cliSnap = cli('sandbox', 'snapshot', sbx.sandboxId).trim();
    await sbx.files.write('/home/user/state.txt', 'after the cli snapshot');
    assert.equal(cli('sandbox', 'rollback', sbx.sandboxId, cliSnap), `rolled back ${sbx.sandboxId} to ${cliSnap}\n`);
    assert.equal(await sbx.files.read('/home/user/state.txt'), 'before the cli');
    assert.throws(() => cli('sandbox', 'rollback', sbx.sandboxId, 'no-such-snapshot'), /not found/);
    await other.kill();
    await Sandbox.deleteSnapshot(otherSnap.snapshotId);
    await sbx.kill();
    // the CLI's snapshot was taken over the first one's files: it goes first
    await assert.rejects(Sandbox.deleteSnapshot(snap.snapshotId), /built on/);
    assert.equal(await Sandbox.deleteSnapshot(cliSnap), true);
    assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), true);
  } finally {
    await sbx.kill().catch(() => {});
    await Volume.destroy(vol.volumeId).catch(() => {});
  }
});

test('Template.exists: the templates the node holds', async () => {
  assert.equal(await Template.exists('base'), true);
  assert.equal(await Template.exists('code-interpreter-v1'), true);
  assert.equal(await Template.exists('no-such-template'), false);
});

test('what cube does not do is refused by name: pauses without memory, onResume reboot', async () => {
  await assert.rejects(Sandbox.create({ lifecycle: { onTimeout: { action: 'pause', keepMemory: false } } }), /autoPauseMemory/);
  const sbx = await Sandbox.create();
  try {
    await assert.rejects(sbx.pause({ keepMemory: false }), /memory: false/);
    assert.equal((await sbx.getInfo()).state, 'running');
    assert.equal(await sbx.pause({ keepMemory: true }), true);
    await assert.rejects(Sandbox.connect(sbx.sandboxId, { onResume: 'reboot' }), /reboot/);
    const again = await Sandbox.connect(sbx.sandboxId, { onResume: 'restore' });
    assert.equal((await again.commands.run('echo back')).stdout, 'back\n');
  } finally {
    await sbx.kill();
  }
});

test('a sandbox is killed when its timeout passes', async () => {
  const sbx = await Sandbox.create({ timeoutMs: 2_000 });
  assert.equal((await sbx.commands.run('echo alive')).stdout, 'alive\n');
  let gone = false;
  for (let i = 0; i < 40 && !gone; i++) {
    await sleep(250);
    gone = await Sandbox.getInfo(sbx.sandboxId).then(() => false, (e) => e instanceof SandboxNotFoundError);
  }
  assert.ok(gone, 'still there after its timeout');
  const listed = await Sandbox.list({ query: { state: ['running', 'paused'] }, limit: 1000 }).nextItems();
  assert.ok(!listed.some((s) => s.sandboxId === sbx.sandboxId));
});

test('cubemastercli makes a template from a rootfs directory, with its own size; the SDK creates from it', async () => {
  const cli = (...args) => execFileSync(`${root}/build/cube-master/cubemastercli`, ['--data', data, ...args], { encoding: 'utf8' });
  const dir = execFileSync('mktemp', ['-d', '/tmp/cube-tpl-XXXXXX'], { encoding: 'utf8' }).trim();
  try {
    // a small rootfs without cube-agent's libraries: the agent bundle serves it
    execFileSync(`${root}/tests/helpers/mkrootfs`, [`${dir}/root`, '', '0']);
    assert.throws(() => cli('tpl', 'create-from-image', 'tiny', '--rootfs', `${dir}/root`, '--memory-mb', '1'), /memory-mb/);
    const job = cli('tpl', 'create-from-image', 'tiny', '--rootfs', `${dir}/root`, '--cpus', '1', '--memory-mb', '256', '--async').match(/job (tpl-\w+)/)[1];
    assert.match(cli('tpl', 'watch', '--job-id', job), new RegExp(`job ${job} done`));
    assert.throws(() => cli('tpl', 'watch', '--job-id', 'tpl-nope'), (e) => e.status === 3);
    assert.match(cli('tpl', 'list'), /^tiny\s/m);
    let sbx;
    for (let i = 0; i < 50 && !sbx; i++) { // the node picks new templates up within a heartbeat
      try { sbx = await Sandbox.create('tiny'); } catch (e) { await sleep(200); }
    }
    assert.ok(sbx, 'no sandbox from the new template');
    assert.equal((await sbx.commands.run('cat /etc/os-release; id -un')).stdout, 'cube-test-rootfs\nroot\n');
    // its size: what the API says, and what the sandbox sees (its memory limit, through lxcfs)
    const info = await fetch(`${process.env.E2B_API_URL}/sandboxes/${sbx.sandboxId}`, { headers: { 'X-API-KEY': process.env.E2B_API_KEY } }).then((r) => r.json());
    assert.equal(info.cpuCount, 1);
    assert.equal(info.memoryMB, 256);
    assert.match((await sbx.commands.run('cat /proc/meminfo')).stdout, /^MemTotal:\s+262144 kB/m);
    const tpls = await fetch(`${process.env.E2B_API_URL}/templates`, { headers: { 'X-API-KEY': process.env.E2B_API_KEY } }).then((r) => r.json());
    assert.equal(tpls.find((t) => t.templateID === 'tiny')?.memoryMB, 256, JSON.stringify(tpls));
    assert.throws(() => cli('tpl', 'delete', 'tiny'), /used by sandbox/);
    await sbx.kill();
    assert.match(cli('tpl', 'delete', 'tiny'), /deleted/);
    assert.throws(() => cli('tpl', 'info', 'tiny'), (e) => e.status === 3);
  } finally {
    execFileSync('rm', ['-rf', dir]);
  }
});

test('every service serves Prometheus metrics', async () => {
  const get = async (url) => {
    const r = await fetch(url);
    assert.equal(r.status, 200, url);
    return r.text();
  };
  const api = await get(`${process.env.E2B_API_URL}/metrics`);
  assert.match(api, /^cube_http_requests_total\{code="201"\} \d+/m);
  const master = await get(`http://127.0.0.1:${port + 2}/metrics`);
  assert.match(master, /^# TYPE cube_sandbox_create_seconds histogram$/m);
  assert.match(master, /^cube_sandbox_create_seconds_count [1-9]\d*$/m);
  assert.match(master, /^cube_sandboxes\{state="running"\} \d+$/m);
  assert.match(master, /^cube_rpc_calls_total\{method="\/cube.Master\/CreateSandbox",code="OK"\} [1-9]/m);
  const node = await get(`http://127.0.0.1:${port + 3}/metrics`);
  assert.match(node, /^cube_pool_ready\{template="base"\} \d+$/m);
  const proxy = await get(`${process.env.E2B_SANDBOX_URL}/metrics`);
  assert.match(proxy, /^cube_proxy_connections_total [1-9]/m);
  const net = await get(`http://127.0.0.1:${port + 4}/metrics`);
  assert.match(net, /^cube_net_slots\{state="leased"\} [1-9]/m);
  assert.match(net, /^cube_net_sandbox_tx_packets\{sandbox="s[a-z0-9]+"\} \d+/m);
});

// Runs a TCP connect (or a name lookup) inside a sandbox: true when it succeeded within 2 s.
const reaches = async (sbx, host, port) => {
  const r = await sbx.commands.run(`python3 -c "import socket; socket.create_connection(('${host}', ${port}), timeout=2)"`).catch((e) => e);
  return r.exitCode === 0;
};
const resolves = async (sbx) => {
  const r = await sbx.commands.run(`python3 -c "import socket; socket.getaddrinfo('deb.debian.org', 80)"`, { envs: { RES_OPTIONS: 'timeout:1 attempts:1' } }).catch((e) => e);
  return r.exitCode === 0;
};
const addressOf = async (sbx) => (await sbx.commands.run(`python3 -c "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(('192.0.2.1', 9)); print(s.getsockname()[0])"`)).stdout.trim();

test('network: sandboxes reach neither each other nor the node; egress follows the policy, changed live', async () => {
  const a = await Sandbox.create();
  const b = await Sandbox.create();
  const server = createServer((c) => c.end()).listen(0, '0.0.0.0');
  try {
    const ipA = await addressOf(a), ipB = await addressOf(b);
    assert.match(ipA, /^10\.\d+\.\d+\.\d+$/);
    assert.notEqual(ipA, ipB);
    await b.commands.run('python3 -m http.server 8080', { background: true });
    let up = false;
    for (let i = 0; i < 50 && !up; i++) up = await reaches(b, ipB, 8080);
    assert.ok(up, 'the server in sandbox B never answered B itself');
    assert.equal(await reaches(a, ipB, 8080), false, 'sandbox A reached sandbox B');
    // the node: its own address, a port this test listens on (which the node itself reaches)
    const nodeIp = Object.values(networkInterfaces()).flat().find((i) => i.family === 'IPv4' && !i.internal).address;
    const hostPort = server.address().port;
    assert.equal(await reaches(a, nodeIp, hostPort), false, 'a sandbox reached a service on the node');
    assert.equal(await reaches(a, nodeIp, port), false, 'a sandbox reached cube-api on the node');
    // egress: name lookups go to the resolver outside; the policy decides, and changes apply at once
    const ns = (await a.commands.run("awk '/^nameserver/ {print $2; exit}' /etc/resolv.conf")).stdout.trim();
    let hostResolves = true;
    try { await lookup('deb.debian.org'); } catch { hostResolves = false; }
    if (!hostResolves || ns.startsWith('127.')) {
      console.log(`# SKIP egress checks: this host cannot resolve names through a non-loopback resolver (${ns})`);
    } else {
      assert.ok(await resolves(a), 'a sandbox with internet access could not resolve a name');
      await a.updateNetwork({ allowInternetAccess: false });
      assert.equal(await resolves(a), false, 'allowInternetAccess: false still let a lookup out');
      await a.updateNetwork({ allowInternetAccess: false, allowOut: [`${ns}/32`] });
      assert.ok(await resolves(a), 'an allowOut entry was not honoured');
      await a.updateNetwork({ denyOut: [`${ns}/32`] });
      assert.equal(await resolves(a), false, 'a denyOut entry was not honoured');
      const info = await a.getInfo();
      assert.deepEqual(info.network.denyOut, [`${ns}/32`]);
      assert.equal(info.allowInternetAccess, true);
      const c = await Sandbox.create({ allowInternetAccess: false });
      try {
        assert.equal(await resolves(c), false, 'a sandbox created without internet access made a lookup');
      } finally {
        await c.kill();
      }
    }
    // rules cube cannot honour are refused, not ignored
    await assert.rejects(Sandbox.create({ network: { denyOut: ['example.com'] } }), /denyOut\[0\].*domain name/);
    const put = await fetch(`${process.env.E2B_API_URL}/sandboxes/${a.sandboxId}/network`, { method: 'PUT', headers: { 'X-API-KEY': process.env.E2B_API_KEY, 'content-type': 'application/json' }, body: '{"denyOut": ["10.0.0.0/33"]}' });
    assert.equal(put.status, 400);
    assert.match((await put.json()).message, /prefix length/);
  } finally {
    server.close();
    await a.kill();
    await b.kill();
  }
});

test('a private sandbox (allowPublicTraffic: false) answers on its ports only with its traffic token', async () => {
  const priv = await Sandbox.create({ network: { allowPublicTraffic: false } });
  const pub = await Sandbox.create();
  try {
    assert.match(priv.trafficAccessToken ?? '', /^[0-9a-f]{32}$/);
    assert.equal(pub.trafficAccessToken, undefined);
    assert.equal((await priv.getInfo()).network?.allowPublicTraffic, false);
    for (const s of [priv, pub]) await s.commands.run('cd /tmp && exec python3 -m http.server 8000 >/dev/null 2>&1', { background: true });
    const get = (s, headers = {}) =>
      fetch(`${process.env.E2B_SANDBOX_URL}/`, { headers: { 'E2b-Sandbox-Id': s.sandboxId, 'E2b-Sandbox-Port': '8000', ...headers } });
    const token = { 'e2b-traffic-access-token': priv.trafficAccessToken };
    for (let i = 0; i < 100 && ((await get(pub)).status !== 200 || (await get(priv, token)).status !== 200); i++) await sleep(100);
    assert.equal((await get(pub)).status, 200, 'a public sandbox needs no token');
    assert.equal((await get(priv, token)).status, 200);
    const none = await get(priv);
    assert.equal(none.status, 403);
    assert.match((await none.json()).message, /e2b-traffic-access-token/);
    assert.equal((await get(priv, { 'e2b-traffic-access-token': '0'.repeat(32) })).status, 403);
    assert.equal((await get(pub, { 'e2b-traffic-access-token': priv.trafficAccessToken })).status, 200);
    // getHost(port) names this machine's proxy (<port>-<id>.localhost:<proxy port>), never the public e2b.app;
    // curl resolves *.localhost to loopback itself (Node's resolver does not: the headers above are its way)
    const host = pub.getHost(8000);
    assert.equal(host, `8000-${pub.sandboxId}.localhost:${new URL(process.env.E2B_SANDBOX_URL).port}`);
    assert.match(execFileSync('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', `http://${host}/`]).toString(), /^200$/);
    // the SDK's own calls go to the agent, guarded by its envd token, and need no traffic token
    assert.equal((await priv.commands.run('echo inside')).stdout, 'inside\n');
    // chosen at create only
    const put = await fetch(`${process.env.E2B_API_URL}/sandboxes/${priv.sandboxId}/network`, { method: 'PUT', headers: { 'X-API-KEY': process.env.E2B_API_KEY, 'content-type': 'application/json' }, body: '{"allowPublicTraffic": true}' });
    assert.equal(put.status, 400);
  } finally {
    await priv.kill();
    await pub.kill();
  }
});

test('an API key with a sandbox limit: past it the SDK gets a RateLimitError in words, bursts and forks included; it manages no keys', async () => {
  const cli = (...args) => execFileSync(`${root}/build/cube-master/cubemastercli`, ['--data', data, ...args], { encoding: 'utf8' });
  const made = JSON.parse(cli('--json', 'key', 'create', 'agent-e2e', '--max-sandboxes', '2'));
  assert.equal(made.maxSandboxes, 2);
  const apiKey = made.key;
  const held = () => JSON.parse(cli('--json', 'key', 'list')).find((k) => k.keyID === made.keyID).sandboxes;
  const mine = [];
  try {
    mine.push(await Sandbox.create({ apiKey }), await Sandbox.create({ apiKey }));
    await assert.rejects(Sandbox.create({ apiKey }), (e) => e instanceof RateLimitError &&
      e.message.includes(`API key ${made.keyID} may hold at most 2 sandboxes`) && e.message.includes('holds 2'));
    assert.equal(held(), 2);
    // the operator sees whose they are
    assert.equal(JSON.parse(cli('--json', 'sandbox', 'info', mine[0].sandboxId)).keyID, made.keyID);
    assert.match(cli('sandbox', 'list'), new RegExp(`${mine[1].sandboxId} .* ${made.keyID}\n`));
    // a burst with one place free: one sandbox, the rest refused; a fork past the limit too
    await mine.shift().kill();
    const burst = await Promise.allSettled(Array.from({ length: 6 }, () => Sandbox.create({ apiKey })));
    for (const r of burst) if (r.status === 'fulfilled') mine.push(r.value);
    assert.equal(burst.filter((r) => r.status === 'fulfilled').length, 1);
    assert.ok(burst.every((r) => r.status === 'fulfilled' || r.reason instanceof RateLimitError));
    await assert.rejects(Sandbox.fork(mine[0].sandboxId, { apiKey, count: 1 }), RateLimitError);
    assert.equal(held(), 2);
    // the operator's key is not bounded by it
    const other = await Sandbox.create();
    await other.kill();
    // a limited key cannot make itself an unlimited one
    const res = await fetch(`${process.env.E2B_API_URL}/api-keys`, { method: 'POST', headers: { 'X-API-KEY': apiKey, 'content-type': 'application/json' }, body: '{"name":"escape"}' });
    assert.equal(res.status, 403);
    // the operator raises the limit: the next create goes through
    assert.match(cli('key', 'limit', made.keyID, '3'), /sandbox limit 3/);
    mine.push(await Sandbox.create({ apiKey }));
    assert.equal(held(), 3);
    assert.throws(() => cli('key', 'limit', made.keyID, 'lots'), /must be a number/);
  } finally {
    for (const s of mine) await s.kill();
    cli('key', 'revoke', made.keyID);
  }
});

test('bad input gets clear errors', async () => {
  const url = process.env.E2B_API_URL;
  const key = process.env.E2B_API_KEY;
  const bad = await fetch(`${url}/v2/sandboxes`, { method: 'POST', headers: { 'X-API-KEY': key, 'content-type': 'application/json' }, body: '{"templateID": ' });
  assert.equal(bad.status, 400);
  assert.equal((await bad.json()).code, 400);
  const wrongType = await fetch(`${url}/v2/sandboxes`, { method: 'POST', headers: { 'X-API-KEY': key }, body: '{"templateID": "base", "timeout": "long"}' });
  assert.equal(wrongType.status, 400);
  await assert.rejects(Sandbox.create({ apiKey: 'e2b_wrong' }), AuthenticationError);
  const nokey = await fetch(`${url}/v2/sandboxes`);
  assert.equal(nokey.status, 401);
  const unknown = await fetch(`${url}/v2/sandboxes`, { method: 'POST', headers: { 'X-API-KEY': key }, body: '{"templateID": "no-such-template"}' });
  assert.ok(unknown.status >= 400 && unknown.status < 500, `unknown template answered ${unknown.status}`);
  assert.match((await unknown.json()).message, /no-such-template/);
  const proxied = await fetch(`${process.env.E2B_SANDBOX_URL}/health`, { headers: { 'E2b-Sandbox-Id': 'inosuchsandbox0000000', 'E2b-Sandbox-Port': '49983' } });
  assert.equal(proxied.status, 502);
});

test('signed file URLs (uploadUrl, downloadUrl) work from anywhere: a browser, curl, another service', async () => {
  // E2B_SANDBOX_URL gives the SDK one address for every sandbox, so the URLs it signs name none: the proxy
  // finds the sandbox by the signature (its access token), and the agent checks it
  const sbx = await Sandbox.create();
  try {
    const path = '/tmp/up load+1.txt';
    const form = new FormData();
    form.append('file', new Blob(['sent by a browser']), 'up.txt');
    const up = await fetch(await sbx.uploadUrl(path), { method: 'POST', body: form });
    assert.equal(up.status, 200, await up.text());
    assert.equal(await sbx.files.read(path), 'sent by a browser');
    const down = await sbx.downloadUrl(path);
    const got = await fetch(down);
    assert.equal(got.status, 200);
    assert.equal(await got.text(), 'sent by a browser');
    // as root, a path relative to its home
    const rootUp = await fetch(await sbx.uploadUrl('mine.txt', { user: 'root' }), { method: 'POST', body: form });
    assert.equal(rootUp.status, 200, await rootUp.text());
    assert.equal((await sbx.commands.run('cat /root/mine.txt', { user: 'root' })).stdout, 'sent by a browser');
    // a signature changed, or past its expiration, opens nothing
    const changed = await fetch(down.replace('signature=v1_', 'signature=v1_A'));
    assert.equal(changed.status, 401);
    assert.match((await changed.json()).message, /signed/);
    const brief = await sbx.downloadUrl(path, { useSignatureExpiration: 1 });
    await sleep(2100);
    assert.equal((await fetch(brief)).status, 401);
    // another sandbox's URL is not this one's
    const other = await Sandbox.create();
    try {
      await other.files.write(path, 'the other one');
      assert.equal(await (await fetch(await other.downloadUrl(path))).text(), 'the other one');
      assert.equal(await (await fetch(down)).text(), 'sent by a browser');
    } finally {
      await other.kill();
    }
    await sbx.kill();
    const gone = await fetch(down);
    assert.equal(gone.status, 401);
    // a URL with no signature names no sandbox: said so
    const unsigned = await fetch(`${process.env.E2B_SANDBOX_URL}/files?path=${encodeURIComponent(path)}`);
    assert.equal(unsigned.status, 400);
    assert.match((await unsigned.json()).message, /without a signature/);
  } finally {
    await sbx.kill().catch(() => {});
  }
});

test('disk is disk: filling it is ENOSPC to the writer; the sandbox answers, keeps its files, reports its disk', async () => {
  const free = () => { const f = statfsSync(data); return f.bavail * f.bsize; };
  const freeBefore = free();
  const sbx = await Sandbox.create();
  try {
    await sbx.files.write('/home/user/keep.txt', 'kept');
    // getMetrics is the sandbox's history, oldest first; the last sample is taken at the call
    const before = (await sbx.getMetrics()).at(-1);
    assert.ok(before.diskTotal >= 900e6 && before.diskTotal <= 1100e6, `diskTotal ${before.diskTotal}`);
    // more than the disk (1 GiB) and more than the memory limit (512 MB): the disk runs out, not the memory
    const fill = await sbx.commands.run('dd if=/dev/zero of=/home/user/fill bs=1M count=1500 2>&1; echo "rc=$?"', { timeoutMs: 120_000 });
    assert.match(fill.stdout, /No space left on device/);
    assert.match(fill.stdout, /rc=1/);
    assert.equal((await sbx.commands.run('cat /home/user/keep.txt')).stdout, 'kept');
    const full = (await sbx.getMetrics()).at(-1);
    assert.ok(full.diskUsed > 0.9 * full.diskTotal, `diskUsed ${full.diskUsed} of ${full.diskTotal}`);
    // the space comes back when the file goes
    await sbx.commands.run('rm /home/user/fill');
    assert.equal((await sbx.commands.run('echo more > /home/user/after.txt && cat /home/user/after.txt')).stdout, 'more\n');
    await sbx.commands.run('dd if=/dev/zero of=/home/user/fill2 bs=1M count=600 status=none; sync');
  } finally {
    await sbx.kill();
  }
  // the node's disk gets the space back once the sandbox is gone (its disk is emptied for another sandbox,
  // or let go), whether the sandbox deleted its files or not
  const reused = async () => /^cube_node_disks_reused_total [1-9]/m.test(await (await fetch(`http://127.0.0.1:${port + 3}/metrics`)).text());
  for (let i = 0; i < 100 && (free() < freeBefore - 200e6 || !(await reused())); i++) await sleep(100);
  assert.ok(free() >= freeBefore - 200e6, `the node's disk has ${((freeBefore - free()) / 1e6).toFixed(0)} MB less than before the sandbox`);
  assert.ok(await reused(), 'ended sandboxes\' disks serve new ones (cube_node_disks_reused_total)');
});

test('the agent outlives what it runs: kill 1 from inside, a memory bomb, then a fork bomb killed through the SDK', async () => {
  const sbx = await Sandbox.create();
  try {
    // code in the sandbox, even as root, signalling PID 1 does not end the sandbox (a VM's init neither)
    const sigs = await sbx.commands.run('for s in TERM INT HUP QUIT USR1; do kill -$s 1; done; sleep 0.2; echo sent', { user: 'root' });
    assert.equal(sigs.stdout, 'sent\n');
    assert.equal((await sbx.commands.run('echo alive')).stdout, 'alive\n');
    assert.equal(await sbx.isRunning(), true);
    // what the agent starts is the OOM killer's first choice, never the agent
    const scores = (await sbx.commands.run('cat /proc/self/oom_score_adj')).stdout.trim();
    assert.equal(scores, '500');
    const mem = await sbx.commands.run('python3 -c "a=[]\nwhile True: a.append(bytearray(64 << 20))"', { timeoutMs: 60_000 }).catch((e) => e);
    assert.notEqual(mem.exitCode, 0, 'the memory bomb was not stopped');
    assert.equal((await sbx.commands.run('echo alive')).stdout, 'alive\n');
    // what runs, zombies the agent has yet to reap aside
    // (while a bomb still holds the process limit, even ps cannot start: not settled yet)
    const running = async () => {
      try {
        return Number((await sbx.commands.run('ps -e -o stat= | grep -vc Z')).stdout.trim());
      } catch {
        return Infinity;
      }
    };
    const idle = await running();
    // a fork bomb holds the sandbox's process limit, less what the agent keeps for itself: the kill gets in
    const bomb = await sbx.commands.run('bomb() { bomb | bomb & }; bomb; wait', { background: true });
    await sleep(1500);
    await bomb.kill(); // true, or false when the bomb burnt out on the limit already (its shells give up)
    assert.equal((await sbx.commands.run('echo alive')).stdout, 'alive\n');
    // nothing of it is left once the kernel has torn down what the kill hit
    const settled = async (what) => {
      let now = await running();
      for (let i = 0; i < 300 && now > idle; i++) {
        await sleep(100);
        now = await running();
      }
      assert.ok(now <= idle, `${now} processes run after ${what} (${idle} before)`);
    };
    await settled('the kill of a fork bomb');
    // a bomb whose first shell returned at once: the kill takes its group all the same
    const orphaned = await sbx.commands.run('bomb() { bomb | bomb & }; bomb', { background: true });
    await sleep(1500);
    await orphaned.kill();
    await settled('the kill of a fork bomb whose first shell had returned');
    assert.equal((await sbx.commands.run('echo alive')).stdout, 'alive\n');
  } finally {
    await sbx.kill();
  }
  // a command whose first process returned at once: the kill still takes what it left running
  const sbx2 = await Sandbox.create();
  try {
    const running = async () => Number((await sbx2.commands.run('ps -e -o stat= | grep -vc Z')).stdout.trim());
    const idle = await running();
    const settled = async (what) => {
      let now = await running();
      for (let i = 0; i < 100 && now > idle; i++) {
        await sleep(100);
        now = await running();
      }
      assert.ok(now <= idle, `${now} processes run after ${what} (${idle} before)`);
    };
    const left = await sbx2.commands.run('for i in $(seq 20); do (while :; do sleep 1; done) & done', { background: true });
    await left.wait();
    assert.ok((await running()) >= idle + 20);
    assert.equal(await left.kill(), true);
    await settled('the kill of what a finished command left');
    assert.equal(await left.kill(), false); // nothing of it is left to kill
  } finally {
    await sbx2.kill();
  }
});

test('one sandbox holding thousands of descriptors in flight leaves the others\' descriptor passing working', async () => {
  // the kernel counts descriptors in flight over Unix sockets per host uid and refuses a sender whose count
  // passes its RLIMIT_NOFILE: sandboxes sharing host uids shared that count
  const hold = `import resource, socket, time
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
a, b = socket.socketpair()
for i in range(16): socket.send_fds(a, [b'x'], [b.fileno()] * 250)
print('held', flush=True)
time.sleep(600)`;
  const pass = `import resource, socket
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
a, b = socket.socketpair()
try:
    socket.send_fds(a, [b'x'], [b.fileno()]); print('ok')
except OSError as e: print(e.strerror)`;
  const [a, b] = await Promise.all([Sandbox.create(), Sandbox.create()]);
  try {
    await a.files.write('/tmp/hold.py', hold);
    await b.files.write('/tmp/pass.py', pass);
    await a.files.write('/tmp/pass.py', pass);
    let out = '';
    await a.commands.run('python3 /tmp/hold.py', { background: true, timeoutMs: 0, onStdout: (d) => { out += d; } });
    for (let i = 0; i < 100 && !out.includes('held'); i++) await sleep(100);
    assert.equal(out, 'held\n');
    assert.match((await a.commands.run('python3 /tmp/pass.py')).stdout, /^Too many references/); // its own count
    assert.equal((await b.commands.run('python3 /tmp/pass.py')).stdout, 'ok\n');
  } finally {
    await Promise.all([a.kill(), b.kill()]);
  }
});

test('one sandbox reserving AIO events leaves the others and the node theirs', async () => {
  // io_setup reserves events from one count for the whole node (aio-max-nr, 65,536 by default): cubelet
  // lifts it, so each sandbox's memory (32 bytes of ring an event) is what bounds it
  const setup = (n, hold) => `import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
nr = {'x86_64': 206, 'aarch64': 0}[os.uname().machine]
held = []
for i in range(${hold ? 64 : 1}):
    ctx = ctypes.c_ulong(0)
    if libc.syscall(nr, ${n}, ctypes.byref(ctx)) != 0:
        print('refused', i, os.strerror(ctypes.get_errno()), flush=True); break
    held.append(ctx)
else: print('ok', len(held), flush=True)
${hold ? 'time.sleep(600)' : ''}`;
  const [a, b] = await Promise.all([Sandbox.create(), Sandbox.create()]);
  try {
    await a.files.write('/tmp/hold.py', setup(32768, true));
    await b.files.write('/tmp/one.py', setup(128, false));
    let out = '';
    await a.commands.run('python3 /tmp/hold.py', { background: true, timeoutMs: 0, onStdout: (d) => { out += d; } });
    for (let i = 0; i < 100 && !out.includes('\n'); i++) await sleep(100);
    assert.equal(out, 'ok 64\n'); // 4 M events, 128 MB of its own memory
    assert.equal((await b.commands.run('python3 /tmp/one.py')).stdout, 'ok 1\n');
  } finally {
    await Promise.all([a.kill(), b.kill()]);
  }
});

test('idle half-open clients lock out neither the API nor the proxy, and cost them no threads', async () => {
  const threads = (svc) => {
    const pid = readFileSync(`${data}/run/${svc}.pid`, 'utf8').trim();
    return Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/^Threads:\s+(\d+)/m)[1]);
  };
  const before = { api: threads('cube-api'), proxy: threads('cube-proxy') };
  const held = [];
  const opened = [];
  for (const [i, url] of [process.env.E2B_API_URL, process.env.E2B_SANDBOX_URL].flatMap((u) => Array(300).fill(u)).entries()) {
    const u = new URL(url);
    const sock = connect({ host: u.hostname, port: Number(u.port) });
    sock.on('error', () => {});
    opened.push(new Promise((resolve) => sock.on('connect', resolve)));
    sock.on('connect', () => sock.write(`GET /health HTTP/1.1\r\nHost: idle-${i}\r\nX-Half: `));
    held.push(sock);
  }
  try {
    await Promise.all(opened);
    await sleep(300);
    const sbx = await Sandbox.create();
    try {
      assert.equal((await sbx.commands.run('echo through')).stdout, 'through\n');
      await sbx.files.write('/tmp/x', 'y');
      assert.equal(await sbx.files.read('/tmp/x'), 'y');
    } finally {
      await sbx.kill();
    }
    // one epoll thread holds them all; a fixed pool runs requests (a few threads of slack for grpc's own)
    assert.ok(threads('cube-api') < before.api + 20, `cube-api went from ${before.api} to ${threads('cube-api')} threads`);
    assert.ok(threads('cube-proxy') < before.proxy + 20, `cube-proxy went from ${before.proxy} to ${threads('cube-proxy')} threads`);
  } finally {
    for (const s of held) s.destroy();
  }
});

test('runCode in code-interpreter-v1', async () => {
  const sbx = await CodeSandbox.create();
  try {
    const r = await sbx.runCode('import numpy as np\nint(np.arange(10).sum())');
    assert.equal(r.text, '45');
    // the worker can be interrupted: SIGINT is neither blocked nor ignored there, so Python has its handler
    const sig = await sbx.runCode('import signal\nsignal.getsignal(signal.SIGINT).__name__');
    assert.equal(sig.text, 'default_int_handler', JSON.stringify(sig));
    // a caller that gives up (timeoutMs) interrupts its code: the next execution does not wait for it
    await assert.rejects(sbx.runCode('import time\ntime.sleep(60)', { timeoutMs: 1500 }));
    const t0 = Date.now();
    const next = await sbx.runCode('6*7');
    assert.equal(next.text, '42');
    assert.ok(Date.now() - t0 < 20000, `the next execution waited ${Date.now() - t0} ms`);
    const fig = await sbx.runCode('import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()');
    assert.ok(fig.results.some((x) => x.png), JSON.stringify(fig.error));
    // javascript and typescript, as E2B's code interpreter runs them (the template's Node.js)
    const js = await sbx.runCode('const xs = [1, 2, 3]\nconsole.log(process.version)\nxs.reduce((a, b) => a + b, 0)', { language: 'js' });
    assert.equal(js.text, '6', JSON.stringify(js));
    assert.match(js.logs.stdout[0], /^v\d+\./);
    const tsc = await sbx.runCode('interface P { x: number }\nconst p: P = { x: 20 }\np.x * 2 + 3', { language: 'ts' });
    assert.equal(tsc.text, '43', JSON.stringify(tsc));
    assert.equal((await sbx.runCode('const s: string = 5', { language: 'typescript' })).error, undefined); // transpiled, not type-checked, as Deno's kernel runs it
    // pip installs for the sandbox's user (no network needed for a local package)
    await sbx.files.write('/tmp/pkg/pyproject.toml', '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n[project]\nname = "cubepkg"\nversion = "0.1"\n');
    await sbx.files.write('/tmp/pkg/cubepkg/__init__.py', 'V = 7\n');
    await sbx.commands.run('cd /tmp/pkg && pip install --no-index --no-build-isolation .', { timeoutMs: 60000 });
    // ... and a Python already running imports it (the user's site-packages exist from the start)
    assert.equal((await sbx.runCode('import cubepkg\ncubepkg.V * 6')).text, '42');
    // python runs as in E2B's Jupyter kernel: shell escapes and magics (the template has IPython),
    // display(), and input() refused at once
    const shown = await sbx.runCode('!pip show cubepkg | head -1\ndisplay(cubepkg.V)\ncubepkg.V + 1');
    assert.match(shown.logs.stdout.join(''), /Name: cubepkg/, JSON.stringify(shown));
    assert.deepEqual(shown.results.map((x) => [x.text, x.isMainResult]), [['7', false], ['8', true]]);
    assert.match((await sbx.runCode('%pip --version')).logs.stdout.join(''), /^pip /);
    assert.equal((await sbx.runCode('input()', { timeoutMs: 10000 })).error?.name, 'StdinNotImplementedError');
  } finally {
    await sbx.kill();
  }
});

test('runCode in base: python without IPython still gives display() and refuses input()', async () => {
  const sbx = await CodeSandbox.create('base');
  try {
    const r = await sbx.runCode('class T:\n    def _repr_html_(self): return "<b>t</b>"\ndisplay(T())\n6 * 7');
    assert.deepEqual(r.results.map((x) => [x.html ?? x.text, x.isMainResult]), [['<b>t</b>', false], ['42', true]]);
    assert.equal((await sbx.runCode('input()', { timeoutMs: 10000 })).error?.name, 'StdinNotImplementedError');
    assert.equal((await sbx.runCode('!true')).error?.name, 'SyntaxError'); // no IPython here: plain Python
  } finally {
    await sbx.kill();
  }
});

test('deploy/cube down leaves nothing behind', () => {
  cube('down', '--data', data);
  assertNothingLeft(data, port);
});
