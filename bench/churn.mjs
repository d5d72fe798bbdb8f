// churn: a sustained stream of creates, each sandbox killed as soon as its create answers (or after
// CUBE_BENCH_LIFE_MS), CUBE_BENCH_RATE creates a second (default 100) for CUBE_BENCH_SECS (default 60), open
// loop (a create is started on time whether or not earlier ones have answered), raw keep-alive HTTP against
// E2B_API_URL. Then it waits for the node to settle (its sandboxes back to what they were) and reads
// the host's available memory again. Prints tab-separated lines:
//   churn_create p50 p95 p99 max     create latency, ms, from when it was due (the client's queue included)
//   churn_served p50 p95 p99 max     from when it had a connection: the server's time
//   churn_done started ok failed     creates started, answered 201, not
//   churn_rate achieved              creates answered per second over the run
//   churn_mem_mb before after        MemAvailable before the run and after it settled
//   churn_sandboxes before after     the node's sandbox state directories (the pool's) before and after
//   churn_procs before after         the host's processes before and after (a leak shows in either)
//   churn_errors "..."               the first few failures' answers
import http from 'node:http';
import { readFileSync, readdirSync } from 'node:fs';

const rate = Number(process.env.CUBE_BENCH_RATE || 100);
const secs = Number(process.env.CUBE_BENCH_SECS || 60);
const life = Number(process.env.CUBE_BENCH_LIFE_MS || 0);
const key = process.env.E2B_API_KEY;
const url = new URL(process.env.E2B_API_URL);
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const q = (v, p) => v.slice().sort((a, b) => a - b)[Math.min(v.length - 1, Math.floor(v.length * p))];

// sent: when the request got a connection (the client's own queue for one of its maxSockets is not the
// server's time)
const req = (method, path, body) =>
  new Promise((resolve) => {
    let sent = 0;
    const r = http.request({ host: url.hostname, port: url.port, method, path, agent, headers: { 'X-API-KEY': key, 'content-type': 'application/json' } }, (res) => {
      let data = '';
      res.on('data', (c) => (data += c));
      res.on('end', () => resolve({ status: res.statusCode, body: data, sent }));
    });
    r.on('socket', () => (sent = performance.now()));
    r.on('error', (e) => resolve({ status: 0, body: String(e), sent }));
    r.setTimeout(30000, () => r.destroy(new Error('no answer in 30 s')));
    r.end(body);
  });

const memAvailableMb = () => Number(/MemAvailable:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))[1]) / 1024;
const data = process.env.CUBE_BENCH_DATA || '/var/lib/cube-e2e';
// the node's sandboxes (their state directories: a leaked sandbox keeps one) and the host's processes
const sandboxes = () => readdirSync(`${data}/sandboxes`).length;
const processes = () => readdirSync('/proc').filter((p) => /^\d+$/.test(p)).length;
const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

const memBefore = memAvailableMb(), sbBefore = sandboxes(), procsBefore = processes();
const lat = [], served = [], errors = [], pending = [];
let started = 0, ok = 0, failed = 0;
const t0 = performance.now();
const one = async () => {
  const t = performance.now();
  const x = await req('POST', '/v2/sandboxes', '{"templateID":"base"}');
  lat.push(performance.now() - t);
  if (x.sent) served.push(performance.now() - x.sent);
  if (x.status !== 201) {
    failed++;
    if (errors.length < 5) errors.push(`${x.status} ${x.body.slice(0, 200)}`);
    return;
  }
  ok++;
  if (life) await sleep(life);
  const k = await req('DELETE', `/sandboxes/${JSON.parse(x.body).sandboxID}`);
  if (k.status !== 204 && errors.length < 5) errors.push(`kill: ${k.status} ${k.body.slice(0, 200)}`);
};
while (performance.now() - t0 < secs * 1000) {
  const due = t0 + (started * 1000) / rate;
  const now = performance.now();
  if (due > now) await sleep(due - now);
  started++;
  pending.push(one());
}
await Promise.all(pending);
const took = (performance.now() - t0) / 1000;
// settled: the node's sandbox count unchanged for 5 s (teardowns done; the pool may have grown to follow the
// rate, which is not a leak), at most 120 s
for (let i = 0, last = -1, still = 0; i < 240 && still < 10; i++) {
  const now = sandboxes();
  still = now === last ? still + 1 : 0;
  last = now;
  await sleep(500);
}
console.log(`churn_create\t${[0.5, 0.95, 0.99].map((p) => q(lat, p).toFixed(2)).join('\t')}\t${Math.max(...lat).toFixed(2)}`);
if (served.length) console.log(`churn_served\t${[0.5, 0.95, 0.99].map((p) => q(served, p).toFixed(2)).join('\t')}\t${Math.max(...served).toFixed(2)}`);
console.log(`churn_done\t${started}\t${ok}\t${failed}`);
console.log(`churn_rate\t${(ok / took).toFixed(1)}`);
console.log(`churn_mem_mb\t${memBefore.toFixed(0)}\t${memAvailableMb().toFixed(0)}`);
console.log(`churn_sandboxes\t${sbBefore}\t${sandboxes()}`);
console.log(`churn_procs\t${procsBefore}\t${processes()}`);
console.log(`churn_errors\t${JSON.stringify(errors)}`);
agent.destroy();
process.exit(0);
