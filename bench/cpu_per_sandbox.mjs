// cpu_per_sandbox: what one sandbox costs the node's CPUs from create to gone, pool refill included. N
// (CUBE_BENCH_N, default 200) raw keep-alive creates against E2B_API_URL one after another, each killed when it
// answers; the host's busy CPU time (/proc/stat, all CPUs, every process and the kernel) is read before and
// after the node settles (its busy time back to the idle rate measured first), less that idle rate; a warm-up at
// the same pace first lets the pool grow to follow it (that growth is not a create's cost). On a node
// that runs nothing else this is the work a create-and-kill costs: the bound on creates a second per core.
// Prints tab-separated lines:
//   cpu_per_sandbox ms             busy CPU ms per create+kill (refill and teardown included)
//   cpu_serial_rate per_s          create+kill pairs a second, one at a time
import http from 'node:http';
import { readFileSync } from 'node:fs';

const n = Number(process.env.CUBE_BENCH_N || 200);
const url = new URL(process.env.E2B_API_URL);
const key = process.env.E2B_API_KEY;
const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
const req = (method, path, body) =>
  new Promise((resolve) => {
    const r = http.request({ host: url.hostname, port: url.port, method, path, agent, headers: { 'X-API-KEY': key, 'content-type': 'application/json' } }, (res) => {
      let data = '';
      res.on('data', (c) => (data += c));
      res.on('end', () => resolve({ status: res.statusCode, body: data }));
    });
    r.on('error', (e) => resolve({ status: 0, body: String(e) }));
    r.end(body);
  });
const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));
const tick = 1000 / 100; // USER_HZ
// busy CPU ms of the whole host so far (user, nice, system, irq, softirq, steal)
const busyMs = () => {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) * tick;
};
const rateOver = async (ms) => {
  const b = busyMs(), t = performance.now();
  await sleep(ms);
  return (busyMs() - b) / (performance.now() - t);
};

let failed = 0;
const serial = async (count) => {
  for (let i = 0; i < count; i++) {
    const x = await req('POST', '/v2/sandboxes', '{"templateID":"base"}');
    if (x.status !== 201) {
      failed++;
      continue;
    }
    await req('DELETE', `/sandboxes/${JSON.parse(x.body).sandboxID}`);
  }
};
const settle = async (idle) => {
  for (let i = 0; i < 60 && (await rateOver(1000)) > idle + 0.02; i++);
};
const idle = await rateOver(3000); // busy ms per ms while nothing is asked
// a warm-up of the same run first: the pool grows to follow it (a quick run of creates counts as a burst, and
// the pool grows to its size in the quiet after; sandboxes made once, not per create), so the measured run
// costs what it consumes and its replacements
await serial(n);
await settle(idle);
failed = 0;
const b0 = busyMs(), t0 = performance.now();
await serial(n);
const took = performance.now() - t0;
await settle(idle);
const busy = busyMs() - b0 - idle * (performance.now() - t0);
console.log(`cpu_per_sandbox\t${(busy / (n - failed)).toFixed(2)}`);
console.log(`cpu_serial_rate\t${(((n - failed) * 1000) / took).toFixed(1)}`);
if (failed) console.log(`cpu_failed\t${failed}`);
agent.destroy();
