// burst: CubeSandbox's method for concurrent creates. CUBE_BENCH_BURST (default 50) raw keep-alive
// `POST /v2/sandboxes` at once, CUBE_BENCH_ROUNDS (default 10) rounds, each round's sandboxes killed before the
// next, against E2B_API_URL as it runs (deploy/cube up with its defaults); then the same loop against a
// do-nothing HTTP server in this process (the floor: what the client and the machine cost). With
// CUBE_BENCH_GAP_MS, rounds are that far apart (bursts after a quiet spell, the pool refilled meanwhile);
// without, back to back (a sustained rate: every create needs a sandbox started somewhere).
// With CUBE_BENCH_VERBOSE set, each round's avg and max and the time its kills took go to stderr.
// Prints tab-separated lines, figures in ms:
//   burst_first avg p95 p99        the first round (the pool as it was: mostly cold starts)
//   burst_rest avg p95 p99         the other rounds together
//   burst_floor avg p95 p99        the do-nothing server, all rounds
//   burst_failed n                 creates that did not answer 201
import http from 'node:http';

const burst = Number(process.env.CUBE_BENCH_BURST || 50);
const rounds = Number(process.env.CUBE_BENCH_ROUNDS || 10);
const gap = Number(process.env.CUBE_BENCH_GAP_MS || 0);
const key = process.env.E2B_API_KEY;
const q = (v, p) => v.slice().sort((a, b) => a - b)[Math.min(v.length - 1, Math.floor(v.length * p))];
const avg = (v) => v.reduce((a, b) => a + b, 0) / v.length;
const fig = (v) => (v.length ? [avg(v), q(v, 0.95), q(v, 0.99)].map((x) => x.toFixed(2)).join('\t') : '-\t-\t-');

function client(base) {
  const url = new URL(base);
  const agent = new http.Agent({ keepAlive: true, maxSockets: burst + 8 });
  const req = (method, path, body) =>
    new Promise((resolve, reject) => {
      const r = http.request({ host: url.hostname, port: url.port, method, path, agent, headers: { 'X-API-KEY': key, 'content-type': 'application/json' } }, (res) => {
        let data = '';
        res.on('data', (c) => (data += c));
        res.on('end', () => resolve({ status: res.statusCode, body: data }));
      });
      r.on('error', reject);
      r.end(body);
    });
  return { req, agent };
}

async function run(base, pause = gap) {
  const { req, agent } = client(base);
  const perRound = [];
  let failed = 0;
  for (let r = 0; r < rounds; r++) {
    const res = await Promise.all(
      Array.from({ length: burst }, async () => {
        const t0 = performance.now();
        const x = await req('POST', '/v2/sandboxes', '{"templateID":"base"}').catch((e) => ({ status: 0, body: String(e) }));
        const ms = performance.now() - t0;
        if (x.status !== 201) {
          failed++;
          return [ms, null];
        }
        return [ms, JSON.parse(x.body).sandboxID];
      }),
    );
    perRound.push(res.map((x) => x[0]));
    const k0 = performance.now();
    await Promise.all(res.filter((x) => x[1]).map((x) => req('DELETE', `/sandboxes/${x[1]}`)));
    if (process.env.CUBE_BENCH_VERBOSE) console.error(`round ${r}: avg ${avg(perRound[r]).toFixed(1)} max ${Math.max(...perRound[r]).toFixed(1)} kills ${(performance.now() - k0).toFixed(1)}`);
    if (pause && r < rounds - 1) await new Promise((ok) => setTimeout(ok, pause));
  }
  agent.destroy();
  return { perRound, failed };
}

// the floor: a server that answers a create the way cube-api does, doing nothing
const floor = http.createServer((rq, rs) => {
  rq.resume();
  rq.on('end', () => {
    if (rq.method === 'POST') {
      rs.writeHead(201, { 'content-type': 'application/json' });
      rs.end('{"sandboxID":"inothing","templateID":"base","clientID":"cube","envdVersion":"0.5.7"}');
    } else {
      rs.writeHead(204);
      rs.end();
    }
  });
});
await new Promise((r) => floor.listen(0, '127.0.0.1', r));

const cube = await run(process.env.E2B_API_URL);
const nothing = await run(`http://127.0.0.1:${floor.address().port}`, 0);
floor.close();
console.log(`burst_first\t${fig(cube.perRound[0])}`);
console.log(`burst_rest\t${fig(cube.perRound.slice(1).flat())}`);
console.log(`burst_floor\t${fig(nothing.perRound.flat())}`);
console.log(`burst_failed\t${cube.failed}`);
process.exit(0);
