// edge_load: what idle and slow clients cost everyone else. An SDK client's round (Sandbox.create, a command,
// a file read, kill) is timed alone, then again while CUBE_BENCH_IDLE (default 5000) connections are held
// half-open, split between cube-api (E2B_API_URL) and cube-proxy (E2B_SANDBOX_URL): each sends half a request
// head and waits; one the server closes is opened again at once, as an attacker would.
// deploy/cube up must be running; E2B_* exported. Prints tab-separated lines:
//   edge_round_unloaded p50 p99     ms, CUBE_BENCH_ROUNDS rounds (default 20)
//   edge_round_loaded p50 p99       the same, with the idle connections held
//   edge_idle_held api proxy        idle connections open at the end of the loaded rounds, per side
//   edge_idle_reopened n            times a server closed one (head deadline, idle timeout, eviction)
import net from 'node:net';
import { Sandbox } from 'e2b';

const rounds = Number(process.env.CUBE_BENCH_ROUNDS || 20);
const idle = Number(process.env.CUBE_BENCH_IDLE || 5000);
const q = (v, p) => v.slice().sort((a, b) => a - b)[Math.min(v.length - 1, Math.floor(v.length * p))];

async function round() {
  const t0 = performance.now();
  const s = await Sandbox.create();
  const r = await s.commands.run('echo ok');
  if (r.stdout !== 'ok\n') throw new Error(`command said ${JSON.stringify(r.stdout)}`);
  await s.files.read('/etc/hostname');
  await s.kill();
  return performance.now() - t0;
}

async function measure() {
  const t = [];
  for (let i = 0; i < rounds; i++) t.push(await round());
  return t;
}

let stopping = false;
let reopened = 0;
const open = { api: 0, proxy: 0 };

// one half-open client: connects, sends half a head, waits; opened again when the server lets it go
function hold(side, url) {
  if (stopping) return;
  const sock = net.connect({ host: url.hostname, port: Number(url.port) });
  let counted = false;
  sock.on('connect', () => {
    counted = true;
    open[side]++;
    sock.write('GET /health HTTP/1.1\r\nHost: idle.example\r\nX-Half: ');
  });
  sock.on('data', () => {});
  sock.on('error', () => {});
  sock.on('close', () => {
    if (counted) open[side]--;
    if (stopping) return;
    reopened++;
    setTimeout(() => hold(side, url), 50);
  });
  holders.push(sock);
}
const holders = [];

const w0 = await measure(); // warm-up: the first rounds of a fresh stack are slower
const unloaded = await measure();
const api = new URL(process.env.E2B_API_URL);
const proxy = new URL(process.env.E2B_SANDBOX_URL);
for (let i = 0; i < idle; i++) {
  hold(i % 2 ? 'proxy' : 'api', i % 2 ? proxy : api);
  if (i % 200 === 199) await new Promise((r) => setTimeout(r, 20)); // do not flood the accept queues
}
await new Promise((r) => setTimeout(r, 1000));
const loaded = await measure();
const held = { ...open };
stopping = true;
for (const s of holders) s.destroy();
void w0;
console.log(`edge_round_unloaded\t${q(unloaded, 0.5).toFixed(2)}\t${q(unloaded, 0.99).toFixed(2)}`);
console.log(`edge_round_loaded\t${q(loaded, 0.5).toFixed(2)}\t${q(loaded, 0.99).toFixed(2)}`);
console.log(`edge_idle_held\t${held.api}\t${held.proxy}`);
console.log(`edge_idle_reopened\t${reopened}`);
process.exit(0);
