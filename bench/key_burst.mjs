// key_burst: many users on one node. Key A (a key made for the run with cubemastercli) fires CUBE_BENCH_BURST
// (default 200) raw `POST /v2/sandboxes` at once on deploy/cube up as it runs; 30 ms later key B (E2B_API_KEY)
// makes one create. Three rounds 8 s apart (the first on the pool as it was, the later ones on a pool grown
// after the burst); every sandbox killed after each round. Prints tab-separated lines, figures in ms:
//   key_burst_other r0 r1 r2       key B's create, each round
//   key_burst_burst p50 max        key A's creates, first round
//   key_burst_quiet p50            key B's create with nobody else creating (10 in a row)
import http from 'node:http';
import { execFileSync } from 'node:child_process';

const url = new URL(process.env.E2B_API_URL);
const B = process.env.E2B_API_KEY, N = Number(process.env.CUBE_BENCH_BURST || 200);
const cli = new URL('../build/cube-master/cubemastercli', import.meta.url).pathname;
const made = JSON.parse(execFileSync(cli, ['--data', process.env.CUBE_BENCH_DATA || '/var/lib/cube', '--json', 'key', 'create', 'bench-burst'], { encoding: 'utf8' }));
const agent = new http.Agent({ keepAlive: true, maxSockets: N + 8 });
const req = (key, method, path, body) => new Promise((res) => {
  const t = performance.now();
  const r = http.request({ host: url.hostname, port: url.port, method, path, agent, headers: { 'X-API-KEY': key, 'content-type': 'application/json' } }, (resp) => {
    let d = '';
    resp.on('data', (c) => (d += c));
    resp.on('end', () => res({ status: resp.statusCode, ms: performance.now() - t, body: d }));
  });
  r.on('error', (e) => res({ status: 0, ms: performance.now() - t, body: String(e) }));
  r.end(body);
});
const create = (key) => req(key, 'POST', '/v2/sandboxes', '{"templateID":"base"}');
const killAll = (rs) => Promise.all(rs.filter((x) => x.status === 201).map((x) => req(B, 'DELETE', `/sandboxes/${JSON.parse(x.body).sandboxID}`)));
const other = [];
let burst = [];
for (let round = 0; round < 3; round++) {
  const as = Array.from({ length: N }, () => create(made.key));
  await new Promise((r) => setTimeout(r, 30));
  const b = await create(B);
  const ar = await Promise.all(as);
  other.push(b.status === 201 ? b.ms.toFixed(1) : `failed(${b.status})`);
  if (round === 0) burst = ar.map((x) => x.ms).sort((x, y) => x - y);
  await killAll([...ar, b]);
  await new Promise((r) => setTimeout(r, 8000));
}
const quiet = [];
for (let i = 0; i < 10; i++) {
  const b = await create(B);
  quiet.push(b.ms);
  await killAll([b]);
}
quiet.sort((x, y) => x - y);
execFileSync(cli, ['--data', process.env.CUBE_BENCH_DATA || '/var/lib/cube', 'key', 'revoke', made.keyID]);
console.log(`key_burst_other\t${other.join('\t')}`);
console.log(`key_burst_burst\t${burst[N >> 1].toFixed(1)}\t${burst[N - 1].toFixed(1)}`);
console.log(`key_burst_quiet\t${quiet[5].toFixed(1)}`);
agent.destroy();
