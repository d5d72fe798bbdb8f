// api_bench: create latency through the whole stack (deploy/cube up must be running; E2B_* exported).
// Prints tab-separated lines: name, then figures in ms.
//   http_seq p50 p95 p99        POST /v2/sandboxes from a light keep-alive HTTP client, one at a time
//                               (CUBE_BENCH_SEQ_N of them, 30 unless set; with CUBE_BENCH_SAMPLES=FILE each
//                               one's "sandboxID ms" goes to FILE)
//   http_c50 avg p95 p99        the same, 50 at once
//   sdk_first ms                the process's first Sandbox.create(): Node loads its fetch (undici) on
//                               the first call, ~80 ms of client start-up on a 2-core machine
//   sdk_first_floor ms          the same first fetch() in a fresh node process, to a do-nothing server
//   sdk_seq p50 p95 p99         Sandbox.create() as the SDK measures it, one at a time, after the first
//   sdk_c50 avg p95 p99         the same, 50 at once
//   sdk_c50_floor avg p95 p99   the SDK's 50 at once against a do-nothing server in another process (its
//                               answer: a real create's, replayed): what the client and the machine cost
//   sdk_cmd p50                 Sandbox.create() + the first commands.run
//   sdk_run p50 p95 p99         a later commands.run('true') in the same sandbox
import http from 'node:http';
import { Sandbox } from 'e2b';

const api = new URL(process.env.E2B_API_URL);
const key = process.env.E2B_API_KEY;
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

function req(method, path, body) {
  return new Promise((resolve, reject) => {
    const r = http.request({ host: api.hostname, port: api.port, method, path, agent, headers: { 'X-API-KEY': key, 'content-type': 'application/json' } }, (res) => {
      let data = '';
      res.on('data', (c) => (data += c));
      res.on('end', () => resolve({ status: res.statusCode, body: data }));
    });
    r.on('error', reject);
    r.end(body);
  });
}

const q = (v, p) => v.slice().sort((a, b) => a - b)[Math.min(v.length - 1, Math.floor(v.length * p))];
const avg = (v) => v.reduce((a, b) => a + b, 0) / v.length;
const fmt = (x) => x.toFixed(2);

async function create() {
  const t0 = performance.now();
  const r = await req('POST', '/v2/sandboxes', '{"templateID":"base"}');
  const ms = performance.now() - t0;
  if (r.status !== 201) throw new Error(`create answered ${r.status}: ${r.body}`);
  return [ms, JSON.parse(r.body).sandboxID];
}

const settle = (ms) => new Promise((r) => setTimeout(r, ms));
const pool = Number(process.env.CUBE_BENCH_POOL || 0);
const waitPool = () => settle(Math.max(1000, pool * 60)); // let the pool refill between phases

const seq = [];
const seqN = Number(process.env.CUBE_BENCH_SEQ_N || 30);
const samples = []; // "sandboxID ms" per sequential create, for CUBE_BENCH_SAMPLES
for (let i = 0; i < seqN; i++) {
  const [ms, id] = await create();
  seq.push(ms);
  samples.push(`${id} ${ms.toFixed(3)}`);
  await req('DELETE', `/sandboxes/${id}`);
  if (i % 5 === 4) await settle(300);
}
console.log(['http_seq', fmt(q(seq, 0.5)), fmt(q(seq, 0.95)), fmt(q(seq, 0.99))].join('\t'));
if (process.env.CUBE_BENCH_SAMPLES) (await import('node:fs')).writeFileSync(process.env.CUBE_BENCH_SAMPLES, samples.join('\n') + '\n');
if (process.env.CUBE_BENCH_ONLY_SEQ) {
  // creates per second, one client at a time over the same keep-alive connection
  console.log(['http_seq_rate', fmt(1000 / avg(seq))].join('\t'));
  process.exit(0);
}

await waitPool();
const conc = await Promise.all(Array.from({ length: 50 }, () => create()));
const cms = conc.map((x) => x[0]);
console.log(['http_c50', fmt(avg(cms)), fmt(q(cms, 0.95)), fmt(q(cms, 0.99))].join('\t'));
await Promise.all(conc.map(([, id]) => req('DELETE', `/sandboxes/${id}`)));

// the client's one-time start-up, beside the same first call to a do-nothing server in a fresh process
const firstFloor = JSON.parse(
  (await import('node:child_process')).execFileSync(process.execPath, ['--input-type=module', '-e', `
    import http from 'node:http';
    const srv = http.createServer((q, r) => { r.writeHead(201, { 'content-type': 'application/json' }); r.end('{}'); }).listen(0, '127.0.0.1');
    await new Promise((r) => srv.on('listening', r));
    const t = performance.now();
    await (await fetch('http://127.0.0.1:' + srv.address().port + '/v2/sandboxes', { method: 'POST', body: '{}' })).text();
    console.log(performance.now() - t);
    srv.close();`], { encoding: 'utf8' }));
await waitPool();
const tf = performance.now();
await (await Sandbox.create()).kill();
console.log(['sdk_first', fmt(performance.now() - tf)].join('\t'));
console.log(['sdk_first_floor', fmt(firstFloor)].join('\t'));
await waitPool();
const sdk = [], cmd = [], run = [];
for (let i = 0; i < 20; i++) {
  const t0 = performance.now();
  const s = await Sandbox.create();
  sdk.push(performance.now() - t0);
  await s.commands.run('true');
  cmd.push(performance.now() - t0);
  for (let k = 0; k < 3; k++) { // later commands in the same sandbox: what each of an agent's steps waits
    const t1 = performance.now();
    await s.commands.run('true');
    run.push(performance.now() - t1);
  }
  await s.kill();
  if (i % 5 === 4) await settle(300);
}
console.log(['sdk_seq', fmt(q(sdk, 0.5)), fmt(q(sdk, 0.95)), fmt(q(sdk, 0.99))].join('\t'));

await waitPool();
const sdkc = await Promise.all(Array.from({ length: 50 }, async () => {
  const t0 = performance.now();
  const s = await Sandbox.create();
  return [performance.now() - t0, s];
}));
const sc = sdkc.map((x) => x[0]);
console.log(['sdk_c50', fmt(avg(sc)), fmt(q(sc, 0.95)), fmt(q(sc, 0.99))].join('\t'));
await Promise.all(sdkc.map(([, s]) => s.kill()));

// the floor: the same 50 SDK creates answered at once by a server that does nothing, with a real answer
const real = await req('POST', '/sandboxes', '{"templateID":"base"}');
const realBody = JSON.parse(real.body);
await req('DELETE', `/sandboxes/${realBody.sandboxID}`);
// in a process of its own, as cube's servers are: one sharing this event loop would make the client wait on it
const { spawn } = await import('node:child_process');
const floorProc = spawn(process.execPath, ['--input-type=module', '-e', `
  import http from 'node:http';
  const body = JSON.parse(process.env.FLOOR_BODY);
  let served = 0;
  const srv = http.createServer((rq, rs) => {
    rq.resume();
    rq.on('end', () => {
      rs.writeHead(201, { 'content-type': 'application/json' });
      rs.end(JSON.stringify({ ...body, sandboxID: 'floor' + served++ }));
    });
  }).listen(0, '127.0.0.1', () => console.log(srv.address().port));`], { env: { ...process.env, FLOOR_BODY: JSON.stringify(realBody) }, stdio: ['ignore', 'pipe', 'inherit'] });
const floorPort = await new Promise((resolve) => floorProc.stdout.once('data', (d) => resolve(Number(String(d).trim()))));
const floorUrl = `http://127.0.0.1:${floorPort}`;
await Sandbox.create({ apiUrl: floorUrl }); // the client's first call to this server made
const fc = await Promise.all(Array.from({ length: 50 }, async () => {
  const t0 = performance.now();
  await Sandbox.create({ apiUrl: floorUrl });
  return performance.now() - t0;
}));
floorProc.kill();
console.log(['sdk_c50_floor', fmt(avg(fc)), fmt(q(fc, 0.95)), fmt(q(fc, 0.99))].join('\t'));
console.log(['sdk_cmd', fmt(q(cmd, 0.5))].join('\t'));
console.log(['sdk_run', fmt(q(run, 0.5)), fmt(q(run, 0.95)), fmt(q(run, 0.99))].join('\t'));
agent.destroy();
