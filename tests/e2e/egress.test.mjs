// Egress by name, end to end: a small internet of the test's own (a network namespace behind a veth that the
// node uses as its uplink, with a DNS server and HTTP/HTTPS servers under a test CA), the single-node stack
// started on it (deploy/cube up --uplink --dns), and the unmodified E2B SDK's network options.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { Sandbox, Secret } from 'e2b';
import { assertNothingLeft } from './leftovers.mjs';

const root = process.env.CUBE_ROOT || new URL('../..', import.meta.url).pathname;
// the stack test's data directory (templates cached there) and ports: the e2e tests run one at a time
const data = process.env.CUBE_STACK_DATA || '/var/lib/cube-e2e';
const port = Number(process.env.CUBE_STACK_PORT || 3310);
const cube = (...args) => execFileSync(`${root}/deploy/cube`, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
const sh = (cmd, ...args) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

const NS = 'cube-e2e-inet', HOSTIF = 'cinet0';
// all on the link's own subnet (198.18.0.0/24, RFC 2544's benchmarking range): no route of this machine changes
const SHARED = '198.18.0.10', WILD = '198.18.0.11', RESOLVER = '198.18.0.2';
const zone = { 'allowed.test': SHARED, 'other.test': SHARED, 'wild.test': WILD, 'a.wild.test': WILD, 'deep.b.wild.test': WILD };
const seen = []; // the servers' request lines
let server, dir, ca;

const cleanupInternet = () => {
  if (/^cube-e2e-inet\b/m.test(sh('ip', 'netns', 'list'))) sh('ip', 'netns', 'del', NS);
};

before(async () => {
  cleanupInternet();
  dir = mkdtempSync(`${tmpdir()}/cube-egress-`);
  // a CA and a server certificate for every name of the zone
  sh('openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=cube egress test CA',
    '-keyout', `${dir}/ca.key`, '-out', `${dir}/ca.pem`);
  sh('openssl', 'req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=allowed.test', '-keyout', `${dir}/srv.key`, '-out', `${dir}/srv.csr`);
  sh('bash', '-c', `printf 'subjectAltName=DNS:allowed.test,DNS:other.test,DNS:wild.test,DNS:*.wild.test,DNS:*.b.wild.test\\n' > '${dir}/ext'`);
  sh('openssl', 'x509', '-req', '-in', `${dir}/srv.csr`, '-CA', `${dir}/ca.pem`, '-CAkey', `${dir}/ca.key`, '-CAcreateserial',
    '-days', '2', '-extfile', `${dir}/ext`, '-out', `${dir}/srv.pem`);
  ca = readFileSync(`${dir}/ca.pem`, 'utf8');
  // the internet: a namespace behind a veth; the servers' addresses on its side of the link
  sh('ip', 'netns', 'add', NS);
  sh('ip', 'link', 'add', HOSTIF, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS);
  sh('ip', 'addr', 'add', '198.18.0.1/24', 'dev', HOSTIF);
  sh('ip', 'link', 'set', HOSTIF, 'up');
  sh('ip', '-n', NS, 'addr', 'add', `${RESOLVER}/24`, 'dev', 'eth0');
  sh('ip', '-n', NS, 'link', 'set', 'eth0', 'up');
  sh('ip', '-n', NS, 'link', 'set', 'lo', 'up');
  sh('ip', '-n', NS, 'addr', 'add', `${SHARED}/24`, 'dev', 'eth0');
  sh('ip', '-n', NS, 'addr', 'add', `${WILD}/24`, 'dev', 'eth0');
  server = spawn('ip', ['netns', 'exec', NS, process.execPath, `${root}/tests/e2e/inet-server.mjs`, JSON.stringify(zone),
    `${dir}/srv.pem`, `${dir}/srv.key`], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: server.stdout });
  await new Promise((resolve, reject) => {
    server.on('exit', (c) => reject(new Error(`the test internet's servers exited with ${c}`)));
    lines.on('line', (l) => {
      const m = JSON.parse(l);
      if (m.kind === 'ready') resolve();
      else seen.push(m);
    });
  });
  const out = cube('up', '--data', data, '--port', String(port), '--pool-size', '2', '--uplink', HOSTIF, '--dns', RESOLVER,
    '--upstream-ca', `${dir}/ca.pem`);
  for (const m of out.matchAll(/^export (\w+)=(.*)$/gm)) process.env[m[1]] = m[2];
  delete process.env.E2B_DEBUG;
});

after(() => {
  try { cube('down', '--data', data); } finally {
    server?.kill();
    cleanupInternet();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
  assertNothingLeft(data, port);
});

// What runs inside the sandbox: one probe per call, its outcome as JSON.
const PROBE = `
import json, socket, ssl, sys, urllib.request
mode, target = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context(cafile='/tmp/test-ca.pem')
try:
    if mode == 'resolve':
        out = sorted({a[4][0] for a in socket.getaddrinfo(target, 80, socket.AF_INET)})
    elif mode in ('http', 'https'):
        out = urllib.request.urlopen(mode + '://' + target + '/', timeout=5, context=ctx if mode == 'https' else None).read().decode()
    elif mode == 'connect':
        ip, port = target.split(',')
        socket.create_connection((ip, int(port)), timeout=5).close()
        out = 'connected'
    elif mode in ('raw-http', 'raw-https'):
        ip, host = target.split(',')
        s = socket.create_connection((ip, 443 if mode == 'raw-https' else 80), timeout=5)
        if mode == 'raw-https':
            s = ctx.wrap_socket(s, server_hostname=host)
        s.sendall(('GET / HTTP/1.1\\r\\nHost: %s\\r\\nConnection: close\\r\\n\\r\\n' % host).encode())
        out = s.recv(4096).decode(errors='replace')
        if not out:
            raise ConnectionResetError('closed without an answer')
    print(json.dumps({'ok': True, 'out': out}))
except Exception as e:
    print(json.dumps({'ok': False, 'error': type(e).__name__ + ': ' + str(e)}))
`;

const probe = async (sbx, mode, target) => {
  const r = await sbx.commands.run(`python3 /tmp/probe.py ${mode} '${target}'`);
  return JSON.parse(r.stdout);
};

test('allowOut by name: the names reach their servers over HTTP and HTTPS, other names on the same address and bare addresses do not; wildcards; live updates; audit', async () => {
  const sbx = await Sandbox.create({ network: { allowOut: ['allowed.test', '*.wild.test'], denyOut: ['0.0.0.0/0'] } });
  try {
    await sbx.files.write('/tmp/probe.py', PROBE);
    await sbx.files.write('/tmp/test-ca.pem', ca);
    // an address no allowed name led to: refused at once (not a timeout); on the web ports, whatever the
    // connection says (here: no name at all)
    let r = await probe(sbx, 'connect', `${SHARED},8080`);
    assert.equal(r.ok, false);
    assert.match(r.error, /ConnectionRefused/, JSON.stringify(r));
    r = await probe(sbx, 'raw-http', `${SHARED},${SHARED}`);
    assert.equal(r.ok, false, JSON.stringify(r));
    // names: only the allowed ones resolve (no name leaves the node for a sandbox that may reach nothing)
    r = await probe(sbx, 'resolve', 'other.test');
    assert.equal(r.ok, false, JSON.stringify(r));
    r = await probe(sbx, 'resolve', 'allowed.test');
    assert.deepEqual(r.out, [SHARED], JSON.stringify(r));
    r = await probe(sbx, 'connect', `${SHARED},8080`);
    assert.equal(r.out, 'connected', JSON.stringify(r));
    r = await probe(sbx, 'http', 'allowed.test');
    assert.equal(r.out, 'hello allowed.test\n', JSON.stringify(r));
    r = await probe(sbx, 'https', 'allowed.test');
    assert.equal(r.out, 'hello allowed.test\n', JSON.stringify(r));
    assert.ok(seen.some((l) => l.kind === 'https' && l.sni === 'allowed.test'), JSON.stringify(seen));
    // the same address under a name not allowed: the name on the connection decides
    const before = seen.length;
    r = await probe(sbx, 'raw-http', `${SHARED},other.test`);
    assert.equal(r.ok, false, JSON.stringify(r));
    r = await probe(sbx, 'raw-https', `${SHARED},other.test`);
    assert.equal(r.ok, false, JSON.stringify(r));
    assert.equal(seen.slice(before).filter((l) => l.host === 'other.test').length, 0, JSON.stringify(seen));
    // a wildcard: its subdomains at any depth, not its apex
    r = await probe(sbx, 'https', 'a.wild.test');
    assert.equal(r.out, 'hello a.wild.test\n', JSON.stringify(r));
    r = await probe(sbx, 'https', 'deep.b.wild.test');
    assert.equal(r.out, 'hello deep.b.wild.test\n', JSON.stringify(r));
    r = await probe(sbx, 'resolve', 'wild.test');
    assert.equal(r.ok, false, JSON.stringify(r));
    // a live update: the next connection follows it
    await sbx.updateNetwork({ allowOut: ['other.test'], denyOut: ['0.0.0.0/0'] });
    r = await probe(sbx, 'https', 'other.test');
    assert.equal(r.out, 'hello other.test\n', JSON.stringify(r));
    r = await probe(sbx, 'raw-https', `${WILD},a.wild.test`);
    assert.equal(r.ok, false, JSON.stringify(r));
    r = await probe(sbx, 'resolve', 'allowed.test');
    assert.equal(r.ok, false, JSON.stringify(r));
    const info = await sbx.getInfo();
    assert.deepEqual(info.network.allowOut, ['other.test']);
    // one audit line per decision
    const log = readFileSync(`${data}/log/cube-net.log`, 'utf8');
    assert.match(log, /msg=egress .*name=allowed\.test address=198\.18\.0\.10 port=443 verdict=allow rule=name:allowed\.test/);
    assert.match(log, /msg=egress .*name=other\.test address=198\.18\.0\.10 port=80 verdict=deny/);
  } finally {
    await sbx.kill();
  }
});

test('a sandbox without name rules resolves and reaches whatever its addresses allow', async () => {
  const sbx = await Sandbox.create();
  try {
    await sbx.files.write('/tmp/probe.py', PROBE);
    await sbx.files.write('/tmp/test-ca.pem', ca);
    const r = await probe(sbx, 'https', 'other.test');
    assert.equal(r.out, 'hello other.test\n', JSON.stringify(r));
    await sbx.updateNetwork({ denyOut: [`${SHARED}/32`] });
    const d = await probe(sbx, 'connect', `${SHARED},8080`);
    assert.match(d.error, /ConnectionRefused/, JSON.stringify(d));
  } finally {
    await sbx.kill();
  }
});

test('egressProxy: TCP tunnelled through a SOCKS5 server with credentials, after the policy; fails closed', async () => {
  const proxy = { address: `${RESOLVER}:1080`, username: 'tunnel', password: 'pw' };
  const sbx = await Sandbox.create({ network: { denyOut: [`${WILD}/32`], egressProxy: proxy } });
  try {
    await sbx.files.write('/tmp/probe.py', PROBE);
    await sbx.files.write('/tmp/test-ca.pem', ca);
    const before = seen.length;
    let r = await probe(sbx, 'https', 'allowed.test');
    assert.equal(r.out, 'hello allowed.test\n', JSON.stringify(r));
    assert.ok(seen.slice(before).some((l) => l.kind === 'socks' && l.dst === `${SHARED}:443`), JSON.stringify(seen.slice(before)));
    // the policy comes first: a denied address is refused, never tunnelled
    r = await probe(sbx, 'connect', `${WILD},8080`);
    assert.match(r.error, /ConnectionRefused/, JSON.stringify(r));
    const info = await sbx.getInfo();
    assert.deepEqual(info.network.egressProxy, { address: proxy.address, username: 'tunnel' });
    // wrong credentials: the connection fails, it never goes direct
    await sbx.updateNetwork({ denyOut: [`${WILD}/32`], egressProxy: { ...proxy, password: 'wrong' } });
    const mark = seen.length;
    r = await probe(sbx, 'http', 'other.test');
    assert.equal(r.ok, false, JSON.stringify(r));
    assert.equal(seen.slice(mark).filter((l) => l.kind === 'http').length, 0, 'a connection went direct');
    // the proxy down: the connection fails, it never goes direct
    await sbx.updateNetwork({ denyOut: [`${WILD}/32`], egressProxy: proxy });
    r = await probe(sbx, 'http', 'other.test');
    assert.equal(r.out, 'hello other.test\n', JSON.stringify(r));
    const off = new Promise((resolve) => { const t = setInterval(() => { if (seen.some((l) => l.kind === 'socks-off')) { clearInterval(t); resolve(); } }, 50); });
    server.stdin.write('socks-off\n');
    await off;
    const mark2 = seen.length;
    r = await probe(sbx, 'http', 'other.test');
    assert.equal(r.ok, false, JSON.stringify(r));
    assert.equal(seen.slice(mark2).filter((l) => l.kind === 'http').length, 0, 'a connection went direct');
    // an update without it: direct again
    await sbx.updateNetwork({ denyOut: [`${WILD}/32`] });
    r = await probe(sbx, 'http', 'other.test');
    assert.equal(r.out, 'hello other.test\n', JSON.stringify(r));
  } finally {
    await sbx.kill();
  }
});

// Looks for a value everywhere in the sandbox: the environment of every process, every file outside /proc,
// /sys and /dev, and the memory of every process but its own. It gets the value reversed, so that nothing of
// it is in any command line.
const SEARCH = `
import os, sys
needle = sys.argv[1][::-1].encode()
found = []
for pid in filter(str.isdigit, os.listdir('/proc')):
    if int(pid) == os.getpid():
        continue
    try:
        if needle in open('/proc/%s/environ' % pid, 'rb').read():
            found.append('environ of %s' % pid)
        with open('/proc/%s/maps' % pid) as maps, open('/proc/%s/mem' % pid, 'rb', 0) as mem:
            for line in maps:
                span, perms = line.split()[:2]
                if not perms.startswith('r'):
                    continue
                lo, hi = (int(x, 16) for x in span.split('-'))
                try:
                    mem.seek(lo)
                    if needle in mem.read(hi - lo):
                        found.append('memory of %s (%s)' % (pid, line.split()[-1]))
                except OSError:
                    pass
    except OSError:
        pass
for top, dirs, files in os.walk('/'):
    dirs[:] = [d for d in dirs if os.path.join(top, d) not in ('/proc', '/sys', '/dev')]
    for f in files:
        p = os.path.join(top, f)
        try:
            if os.path.isfile(p) and not os.path.islink(p) and needle in open(p, 'rb').read():
                found.append(p)
        except OSError:
            pass
print('\\n'.join(found) if found else 'nowhere')
`;

test('rules: a header set on HTTPS to a name on the way out; the value is nowhere in the sandbox', async () => {
  const secret = `sk-cube-e2e-${randomBytes(12).toString('hex')}`;
  const rules = { 'allowed.test': [{ transform: { headers: { Authorization: `Bearer ${secret}`, 'X-Team': 'cube' } } }] };
  const sbx = await Sandbox.create({ network: { allowOut: ['allowed.test', '*.wild.test'], denyOut: ['0.0.0.0/0'], rules } });
  try {
    await sbx.files.write('/tmp/probe.py', PROBE.replace("cafile='/tmp/test-ca.pem'", ''));
    await sbx.files.write('/tmp/search.py', SEARCH);
    const before = seen.length;
    // the sandbox's own trust store holds the node's CA: no option needed (urllib, curl)
    let r = await probe(sbx, 'https', 'allowed.test');
    assert.equal(r.out, 'hello allowed.test\n', JSON.stringify(r));
    const curl = await sbx.commands.run('curl -sS -H "Authorization: mine" https://allowed.test/');
    assert.equal(curl.stdout, 'hello allowed.test\n');
    // and what reads no system store (Node) is pointed at the CA's own file
    const env = await sbx.commands.run('echo "$NODE_EXTRA_CA_CERTS"; grep -c "BEGIN CERTIFICATE" "$NODE_EXTRA_CA_CERTS"');
    assert.equal(env.stdout, '/usr/local/share/ca-certificates/cube-egress.crt\n1\n');
    const got = seen.slice(before).filter((l) => l.kind === 'https' && l.host === 'allowed.test');
    assert.equal(got.length, 2, JSON.stringify(seen.slice(before)));
    for (const l of got) {
      assert.equal(l.headers.authorization, `Bearer ${secret}`);
      assert.equal(l.headers['x-team'], 'cube');
    }
    // a name without rules is passed through untouched: the real server's certificate, no header
    await sbx.files.write('/tmp/test-ca.pem', ca);
    await sbx.files.write('/tmp/probe-ca.py', PROBE);
    const mark = seen.length;
    const w = await sbx.commands.run(`python3 /tmp/probe-ca.py https a.wild.test`);
    assert.equal(JSON.parse(w.stdout).out, 'hello a.wild.test\n', w.stdout);
    assert.equal(seen.slice(mark).find((l) => l.host === 'a.wild.test').headers.authorization, undefined);
    // the value is nowhere inside: environments, files, memory (the search finds a planted control value in each)
    const search = (v) => sbx.commands.run(`python3 /tmp/search.py '${[...v].reverse().join('')}'`, { user: 'root' });
    const control = `ctl-${randomBytes(12).toString('hex')}`;
    await sbx.files.write('/tmp/planted.txt', control);
    const holder = await sbx.commands.run('sleep 60', { background: true, envs: { PLANTED: control } });
    const found = (await search(control)).stdout;
    assert.match(found, /\/tmp\/planted\.txt/, found);
    assert.match(found, /environ of \d+/, found);
    assert.match(found, /memory of \d+/, found);
    await holder.kill();
    const where = await search(secret);
    assert.equal(where.stdout.trim(), 'nowhere', where.stdout);
    const info = await sbx.getInfo();
    assert.ok(!JSON.stringify(info).includes(secret), 'getInfo returned the value');
    assert.deepEqual(Object.keys(info.network.rules ?? {}), ['allowed.test']);
    const log = readFileSync(`${data}/log/cube-net.log`, 'utf8');
    assert.ok(!log.includes(secret), 'the value is in cube-net\'s log');
    assert.match(log, /msg=egress .*name=allowed\.test .*verdict=allow rule=name:allowed\.test inject=allowed\.test/);
  } finally {
    await sbx.kill();
  }
  for (const f of ['cube-api', 'cube-master', 'cubelet']) {
    assert.ok(!readFileSync(`${data}/log/${f}.log`, 'utf8').includes(secret), `the value is in ${f}'s log`);
  }
});

test('secrets: a rule names a secret (Secret.fill); its value reaches the server and nothing else; updates and deletes reach running sandboxes', async () => {
  const name = `e2e-token-${randomBytes(4).toString('hex')}`;
  const v1 = `sk-v1-${randomBytes(12).toString('hex')}`, v2 = `sk-v2-${randomBytes(12).toString('hex')}`;
  const info = await Secret.create(name, v1, { metadata: { team: 'cube' } });
  assert.equal(info.name, name);
  assert.equal(info.version, 1);
  assert.deepEqual(info.metadata, { team: 'cube' });
  assert.match(info.secretId, /^sec_/);
  // bad input: a 400 (409 for a taken name) that says what is wrong
  await assert.rejects(Secret.create(name.toUpperCase(), 'x'), /already exists/);
  await assert.rejects(Secret.create('sec_mine', 'x'), /name/);
  await assert.rejects(Secret.create(`${name}-nl`, 'a\r\nInjected: yes'), /value/);
  const listed = [];
  const pages = Secret.list({ limit: 1 });
  while (pages.hasNext) listed.push(...await pages.nextItems());
  assert.ok(listed.some((s) => s.name === name), JSON.stringify(listed));
  assert.equal((await Secret.getInfo(info.secretId)).name, name);
  assert.equal(await Secret.exists(name), true);
  const rules = { 'allowed.test': [{ transform: { headers: { Authorization: `Bearer ${Secret.fill(name)}` } } }] };
  const sbx = await Sandbox.create({ network: { allowOut: ['allowed.test'], denyOut: ['0.0.0.0/0'], rules } });
  try {
    // trusts the node's CA (the system bundle: while the rule injects) and the test's (once it no longer does)
    await sbx.files.write('/tmp/test-ca.pem', ca);
    await sbx.commands.run('cat /etc/ssl/certs/ca-certificates.crt /tmp/test-ca.pem > /tmp/both.pem');
    await sbx.files.write('/tmp/probe.py', PROBE.replace("cafile='/tmp/test-ca.pem'", "cafile='/tmp/both.pem'"));
    const sent = async () => { // the Authorization header the server saw on one new HTTPS connection
      const mark = seen.length;
      const r = await probe(sbx, 'https', 'allowed.test');
      assert.equal(r.out, 'hello allowed.test\n', JSON.stringify(r));
      return seen.slice(mark).filter((l) => l.kind === 'https' && l.host === 'allowed.test').map((l) => l.headers.authorization);
    };
    assert.deepEqual(await sent(), [`Bearer ${v1}`]);
    const shown = JSON.stringify([await sbx.getInfo(), listed, await Secret.getInfo(name)]);
    assert.ok(!shown.includes(v1), 'an answer carried the value');
    // the store keeps it sealed, the sandbox's record keeps the placeholder
    for (const f of ['cube.db', 'cube.db-wal']) {
      let bytes = '';
      try { bytes = readFileSync(`${data}/${f}`, 'latin1'); } catch { continue; }
      assert.ok(!bytes.includes(v1), `the value is in the store's ${f}`);
    }
    // a new value reaches the running sandbox's next connection
    const up = await Secret.update(name, v2);
    assert.equal(up.version, 2);
    assert.deepEqual(up.metadata, { team: 'cube' });
    assert.deepEqual(await sent(), [`Bearer ${v2}`]);
    // deleted: the header is not sent any more (never the placeholder); with no header left for the name, its
    // connections pass through untouched
    assert.equal(await Secret.destroy(name), true);
    assert.deepEqual(await sent(), [undefined]);
    assert.equal(await Secret.exists(name), false);
    assert.equal(await Secret.destroy(name), false);
    await assert.rejects(Sandbox.create({ network: { allowOut: ['allowed.test'], rules } }), /network\.rules/);
  } finally {
    await sbx.kill();
  }
  for (const f of ['cube-api', 'cube-master', 'cubelet', 'cube-net']) {
    const log = readFileSync(`${data}/log/${f}.log`, 'utf8');
    assert.ok(!log.includes(v1) && !log.includes(v2), `a value is in ${f}'s log`);
  }
});

// A server inside the sandbox that answers with the Host its request carried: plain, or TLS with a
// self-signed certificate (argv: port [cert key]).
const ECHO_HOST = `
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ('host=%s' % self.headers.get('Host')).encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(('0.0.0.0', int(sys.argv[1])), H)
if len(sys.argv) > 2:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
`;

test('inbound: maskRequestHost is the Host the sandbox sees, httpsPorts are reached over TLS; both kept by updates', async () => {
  sh('openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=inside',
    '-keyout', `${dir}/inside.key`, '-out', `${dir}/inside.pem`);
  const sbx = await Sandbox.create({ network: { maskRequestHost: 'localhost:${PORT}', httpsPorts: [8443] } });
  try {
    await sbx.files.write('/tmp/echo.py', ECHO_HOST);
    await sbx.files.write('/tmp/inside.pem', readFileSync(`${dir}/inside.pem`, 'utf8'));
    await sbx.files.write('/tmp/inside.key', readFileSync(`${dir}/inside.key`, 'utf8'));
    await sbx.commands.run('python3 /tmp/echo.py 8000', { background: true });
    await sbx.commands.run('python3 /tmp/echo.py 8443 /tmp/inside.pem /tmp/inside.key', { background: true });
    const get = (p) => fetch(`${process.env.E2B_SANDBOX_URL}/`, { headers: { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': String(p) } });
    let plain;
    for (let i = 0; i < 50; i++) {
      plain = await get(8000);
      if (plain.status === 200) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(await plain.text(), 'host=localhost:8000');
    let tls;
    for (let i = 0; i < 50; i++) {
      tls = await get(8443);
      if (tls.status === 200) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const tlsBody = await tls.text();
    assert.equal(tls.status, 200, tlsBody);
    assert.equal(tlsBody, 'host=localhost:8443');
    const info = await sbx.getInfo();
    assert.equal(info.network.maskRequestHost, 'localhost:${PORT}');
    assert.deepEqual(info.network.httpsPorts, [8443]);
    // an egress update keeps them (they are chosen at create)
    await sbx.updateNetwork({ denyOut: [`${WILD}/32`] });
    assert.equal(await (await get(8443)).text(), 'host=localhost:8443');
  } finally {
    await sbx.kill();
  }
});

test('bad name rules are a 400 naming the field', async () => {
  for (const [network, field] of [
    [{ allowOut: ['*'] }, 'allowOut'],
    [{ allowOut: ['ok.test', 'a.*.test'] }, 'allowOut\\[1\\]'],
    [{ denyOut: ['evil.test'] }, 'denyOut'],
    [{ egressProxy: { address: 'no-port' } }, 'egressProxy'],
    [{ rules: { '*': [{ transform: { headers: { A: 'b' } } }] } }, 'rules'],
    [{ httpsPorts: [49983] }, 'httpsPorts'],
    [{ maskRequestHost: 'two words' }, 'maskRequestHost'],
    [{ rules: { 'ok.test': [{ transform: { headers: { 'Bad Name': 'b' } } }] } }, 'rules'],
    [{ rules: { 'ok.test': [{ transform: { headers: { A: 'line\r\nInjected: yes' } } }] } }, 'rules'],
  ]) {
    await assert.rejects(Sandbox.create({ network }), new RegExp(field), JSON.stringify(network));
  }
});
