// Template builds through the unmodified E2B SDK (Template.build) on the stack deploy/cube up starts: every
// step's effect in the sandboxes of the built template, the layer cache on a rebuild, a failing step's output,
// and bad input refused with the field named.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, mkdirSync, writeFileSync, symlinkSync, rmSync, readFileSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Sandbox, Template, BuildError, waitForPort } from 'e2b';

const root = process.env.CUBE_ROOT || new URL('../..', import.meta.url).pathname;
const data = process.env.CUBE_STACK_DATA || '/var/lib/cube-e2e';
const port = Number(process.env.CUBE_STACK_PORT || 3310);
const cube = (...args) => execFileSync(`${root}/deploy/cube`, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
const cli = (...args) => execFileSync(`${root}/build/cube-master/cubemastercli`, ['--data', data, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const name = `sdk-built-${process.pid}`;
// in each step a comment unique to this run: the node's layer cache outlives a run (a rerun on the same data
// directory must not find these steps already built)
const runTag = `# run ${process.pid}-${Date.now().toString(36)}`;
let ctxDir;
const built = [name, `${name}-server`, `${name}-img`, `${name}-img2`]; // deleted after the run

before(() => {
  const out = cube('up', '--data', data, '--port', String(port), '--pool-size', '2');
  for (const m of out.matchAll(/^export (\w+)=(.*)$/gm)) process.env[m[1]] = m[2];
  delete process.env.E2B_DEBUG;
  // the build context: a directory with a file, a file deeper down and a symlink
  ctxDir = mkdtempSync(path.join(tmpdir(), 'cube-build-ctx-'));
  mkdirSync(path.join(ctxDir, 'app', 'sub'), { recursive: true });
  writeFileSync(path.join(ctxDir, 'app', 'hello.txt'), 'hello from the context\n');
  writeFileSync(path.join(ctxDir, 'app', 'sub', 'deep.txt'), 'deep\n');
  symlinkSync('hello.txt', path.join(ctxDir, 'app', 'link'));
});

after(async () => {
  // the templates this run built are deleted as a user would delete them (the layer cache stays)
  for (const t of built) {
    const r = await fetch(`${process.env.E2B_API_URL}/templates/${t}`,
      { method: 'DELETE', headers: { 'X-API-KEY': process.env.E2B_API_KEY } });
    assert.ok(r.status === 204 || r.status === 404, `DELETE /templates/${t}: ${r.status} ${await r.text()}`);
  }
  rmSync(ctxDir, { recursive: true, force: true });
  cube('down', '--data', data);
});

const template = (lastStep) => Template({ fileContextPath: ctxDir })
  .fromTemplate('base')
  .runCmd(`mkdir -p /opt/tool && echo v1 > /opt/tool/version ${runTag}`, { user: 'root' })
  .setUser('guest')
  .copy('app', '/srv/app/')
  .setEnvs({ GREETING: 'hello from the template' })
  .setWorkdir('/srv/app')
  .runCmd(`${lastStep} ${runTag}`);

async function build(t, alias, opts = {}) {
  const logs = [];
  const t0 = Date.now();
  await Template.build(t, alias, { onBuildLogs: (e) => logs.push(e), ...opts });
  return { logs, ms: Date.now() - t0, text: logs.map((e) => `${e.level} ${e.message}`).join('\n') };
}

test('a template built with the SDK: RUN, USER, COPY (a file, a deeper file, a symlink), ENV, WORKDIR', async () => {
  const first = await build(template('echo step-one > marker.txt'), name);
  assert.match(first.text, /\[1\/6\] RUN mkdir -p \/opt\/tool/);
  assert.match(first.text, /Template '.*' built in/);
  assert.doesNotMatch(first.text, /CACHED/);
  assert.ok(await Template.exists(name));

  const sbx = await Sandbox.create(name);
  try {
    const run = async (cmd) => (await sbx.commands.run(cmd)).stdout.trim();
    assert.equal(await run('whoami'), 'guest');
    assert.equal(await run('pwd'), '/srv/app');
    assert.equal(await run('echo "$GREETING"'), 'hello from the template');
    assert.equal(await run('cat /opt/tool/version'), 'v1');
    assert.equal(await run('cat hello.txt'), 'hello from the context');
    assert.equal(await run('cat sub/deep.txt'), 'deep');
    assert.equal(await run('readlink link'), 'hello.txt');
    assert.equal(await run('stat -c %U hello.txt'), 'guest');
    assert.equal(await run('cat marker.txt'), 'step-one');
    assert.equal(await sbx.files.read('/srv/app/hello.txt'), 'hello from the context\n');
  } finally {
    await sbx.kill();
  }

  // the same template with its last step changed: the five steps before it come from the cache
  const second = await build(template('echo step-two > marker.txt'), name);
  assert.equal((second.text.match(/CACHED \[/g) || []).length, 5, second.text);
  assert.match(second.text, /\[6\/6\] RUN echo step-two/);
  assert.match(second.text, /5 of 6 steps cached/);
  console.log(`# build: first ${first.ms} ms, rebuild with one step changed ${second.ms} ms`);
  const again = await Sandbox.create(name);
  try {
    assert.equal((await again.commands.run('cat marker.txt')).stdout.trim(), 'step-two');
  } finally {
    await again.kill();
  }

  // skipCache runs every step again
  const forced = await build(template('echo step-two > marker.txt'), name, { skipCache: true });
  assert.doesNotMatch(forced.text, /CACHED/);
});

test('tags: name:tag starts that tag\'s build, the bare name its default, and a tag moves at once', async () => {
  const tagged = `${name}-tags`;
  built.push(tagged);
  const which = (word) => Template().fromTemplate('base').runCmd(`echo ${word} > /tmp/which ${runTag}`);
  const read = async (tpl) => {
    const sbx = await Sandbox.create(tpl);
    try { return (await sbx.commands.run('cat /tmp/which')).stdout.trim(); } finally { await sbx.kill(); }
  };
  await build(which('one'), tagged);
  await build(which('two'), `${tagged}:v2`, { tags: ['stable'] });
  assert.equal(await read(tagged), 'one'); // a tagged build leaves the default where it was
  assert.equal(await read(`${tagged}:default`), 'one');
  assert.equal(await read(`${tagged}:v2`), 'two');
  assert.equal(await read(`${tagged}:stable`), 'two');
  const tags = Object.fromEntries((await Template.getTags(tagged)).map((t) => [t.tag, t.buildId]));
  assert.deepEqual(Object.keys(tags).sort(), ['default', 'stable', 'v2']);
  assert.equal(tags.v2, tags.stable);
  assert.notEqual(tags.v2, tags.default);
  // the default moves to v2's build; a new tag on it
  const moved = await Template.assignTags(`${tagged}:v2`, ['default', 'production']);
  assert.equal(moved.buildId, tags.v2);
  assert.equal(await read(tagged), 'two');
  assert.equal(await read(`${tagged}:production`), 'two');
  // the same through cubemastercli, for operators
  assert.match(cli('tpl', 'tag', `${tagged}:v2`, 'ops'), new RegExp(`tagged build ${tags.v2}`));
  assert.match(cli('tpl', 'tags', tagged), /^ops\s+\S+$/m);
  assert.equal(await read(`${tagged}:ops`), 'two');
  cli('tpl', 'untag', tagged, 'ops');
  assert.doesNotMatch(cli('tpl', 'tags', tagged), /^ops\s/m);
  assert.throws(() => cli('tpl', 'untag', tagged, 'ops'), (e) => e.status === 3);
  await Template.removeTags(tagged, 'stable');
  await assert.rejects(Sandbox.create(`${tagged}:stable`), /not found/);
  await assert.rejects(Template.removeTags(tagged, 'default'), /default/);
  await assert.rejects(Template.assignTags(`${tagged}:nope`, 'x'), /not found/);
});

test('a start command runs in every sandbox of the template, ready before the sandbox is handed out; minFreeDiskMb sizes their disks', async () => {
  const t = Template().fromTemplate('base')
    .runCmd('mkdir -p /home/user/site && echo served > /home/user/site/index.html')
    .setWorkdir('/home/user/site')
    .setStartCmd('python3 -m http.server 8000', waitForPort(8000));
  const { text } = await build(t, `${name}-server`, { minFreeDiskMb: 3072 });
  assert.match(text, /Start command: python3 -m http.server 8000; waiting for: \[ -n "\$\(ss -Htuln sport = :8000\)" \]/);
  assert.match(text, /Start command ready in/);
  for (let i = 0; i < 2; i++) { // a cold start and a pooled one alike
    const sbx = await Sandbox.create(`${name}-server`);
    try {
      const r = await sbx.commands.run('curl -s http://127.0.0.1:8000/index.html');
      assert.equal(r.stdout.trim(), 'served');
      const df = await sbx.commands.run('df -m --output=size,avail / | tail -1');
      const [size, avail] = df.stdout.trim().split(/\s+/).map(Number);
      assert.ok(size >= 3000 && avail >= 2900, `df: ${df.stdout}`); // the node's default is 1024 MB
      const info = await fetch(`${process.env.E2B_API_URL}/sandboxes/${sbx.sandboxId}`,
        { headers: { 'X-API-KEY': process.env.E2B_API_KEY } }).then((r) => r.json());
      assert.equal(info.diskSizeMB, 3072);
      const procs = await sbx.commands.list();
      assert.ok(procs.some((p) => p.tag === 'start-cmd' && /http\.server/.test([p.cmd, ...p.args].join(' '))),
        JSON.stringify(procs));
    } finally {
      await sbx.kill();
    }
  }
});

// An OCI image layout of dir (one gzipped layer), tagged tag: what a registry push starts from.
function ociLayout(dir, rootfs, tag) {
  const blobs = path.join(dir, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  const put = (buf) => {
    const hex = createHash('sha256').update(buf).digest('hex');
    writeFileSync(path.join(blobs, hex), buf);
    return { digest: `sha256:${hex}`, size: buf.length };
  };
  const layerFile = path.join(dir, 'layer.tar.gz');
  execFileSync('tar', ['-C', rootfs, '--numeric-owner', '--owner=0', '--group=0', '-czf', layerFile, '.']);
  const gz = readFileSync(layerFile);
  rmSync(layerFile);
  const layer = put(gz);
  const diffId = `sha256:${createHash('sha256').update(gunzipSync(gz)).digest('hex')}`;
  const config = put(Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux',
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'] },
    rootfs: { type: 'layers', diff_ids: [diffId] },
  })));
  const manifest = put(Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...layer }],
  })));
  // pushed as a multi-platform index, as most public images are: the puller must pick linux/amd64
  const entry = (arch) => ({ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest,
    platform: { os: 'linux', architecture: arch } });
  const index = put(Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [entry('arm64'), entry('amd64')],
  })));
  writeFileSync(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(path.join(dir, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    manifests: [{ mediaType: 'application/vnd.oci.image.index.v1+json', ...index,
      annotations: { 'org.opencontainers.image.ref.name': tag } }],
  }));
}

const freePort = () => new Promise((resolve) => {
  const srv = createServer().listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
});

const registryTools = ['/usr/bin/docker-registry', '/usr/bin/skopeo'].filter((p) => !existsSync(p));
test('fromImage: an image from a registry that wants a password, pulled once and built on', {
  skip: registryTools.length ? `needs ${registryTools.join(', ')} (deploy/install-deps installs them)` : false,
}, async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'cube-registry-'));
  let registry;
  try {
    // a registry on loopback with basic auth (a bcrypt htpasswd, as the registry requires)
    const hash = execFileSync('python3', ['-W', 'ignore', '-c',
      "import crypt; print(crypt.crypt('s3cret', crypt.mksalt(crypt.METHOD_BLOWFISH)))"], { encoding: 'utf8' }).trim();
    writeFileSync(path.join(dir, 'htpasswd'), `builder:${hash}\n`);
    const port = await freePort();
    writeFileSync(path.join(dir, 'config.yml'), [
      'version: 0.1', 'log:', '  level: error', 'storage:', '  filesystem:', `    rootdirectory: ${dir}/store`,
      'http:', `  addr: 127.0.0.1:${port}`, 'auth:', '  htpasswd:', '    realm: cube-test', `    path: ${dir}/htpasswd`, '',
    ].join('\n'));
    registry = spawn('/usr/bin/docker-registry', ['serve', path.join(dir, 'config.yml')], { stdio: 'ignore' });
    for (let i = 0; i < 100; i++) {
      if (await fetch(`http://127.0.0.1:${port}/v2/`).then(() => true, () => false)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    // an image that is not one of cube's templates: a small rootfs, pushed as an OCI image
    execFileSync(`${root}/tests/helpers/mkrootfs`, [path.join(dir, 'rootfs'), '', '0']);
    ociLayout(path.join(dir, 'oci'), path.join(dir, 'rootfs'), 'v1');
    const image = `127.0.0.1:${port}/team/tiny:v1`;
    execFileSync('skopeo', ['copy', '--quiet', '--all', '--dest-tls-verify=false', '--dest-creds', 'builder:s3cret',
      `oci:${path.join(dir, 'oci')}:v1`, `docker://${image}`]);

    const t = () => Template().fromImage(image, { username: 'builder', password: 's3cret' })
      .runCmd(`echo built-on-the-image > /root/marker ${runTag}`);
    const first = await build(t(), `${name}-img`);
    const pulled = first.text.match(/Pulling 127\.0\.0\.1:\d+\/team\/tiny:v1 \(sha256:([0-9a-f]{16})/);
    assert.ok(pulled, first.text);
    built.push(`image-${pulled[1]}`); // the image's own template
    const sbx = await Sandbox.create(`${name}-img`);
    try {
      assert.equal((await sbx.commands.run('cat /etc/os-release; cat /root/marker')).stdout,
        'cube-test-rootfs\nbuilt-on-the-image\n');
    } finally {
      await sbx.kill();
    }
    // a second template from the same image does not pull it again
    const second = await build(Template().fromImage(image, { username: 'builder', password: 's3cret' })
      .runCmd(`true ${runTag}`), `${name}-img2`);
    assert.match(second.text, /already on this node/, second.text);
    assert.doesNotMatch(second.text, /Pulling/);

    // the wrong password, and no password: the build fails saying the registry refused
    await assert.rejects(build(Template().fromImage(image, { username: 'builder', password: 'wrong' }), `${name}-img3`),
      (e) => e instanceof BuildError && /fromImage: .*(401|unauthori[sz]ed|refused)/i.test(e.message));
    await assert.rejects(build(Template().fromImage(image), `${name}-img3`),
      (e) => e instanceof BuildError && /fromImage: .*asks for credentials/.test(e.message));
  } finally {
    registry?.kill();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a failing RUN fails the build with its output and the step', async () => {
  const t = Template().fromTemplate('base').runCmd('echo about-to-fail; echo on-stderr >&2; exit 3');
  const logs = [];
  await assert.rejects(
    Template.build(t, `${name}-fails`, { onBuildLogs: (e) => logs.push(e) }),
    (e) => e instanceof BuildError && /exit(ed with)? code 3/.test(e.message),
  );
  const text = logs.map((e) => e.message).join('\n');
  assert.match(text, /about-to-fail/);
  assert.match(text, /on-stderr/);
  assert.equal(await Template.exists(`${name}-fails`), false);
});

test('bad input is a 400 naming the field', async () => {
  const api = process.env.E2B_API_URL;
  const post = (p, body) => fetch(`${api}${p}`, {
    method: 'POST',
    headers: { 'X-API-KEY': process.env.E2B_API_KEY, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  let r = await post('/v3/templates', { name: 'Not A Name!' });
  assert.equal(r.status, 400);
  assert.match((await r.json()).message, /^name/);
  r = await post('/v3/templates', { name: 'ok-name', cpuCount: 0 });
  assert.equal(r.status, 400);
  assert.match((await r.json()).message, /^cpuCount/);
  r = await post('/v3/templates', { name: 'ok-name', memoryMB: 'lots' });
  assert.equal(r.status, 400);
  assert.match((await r.json()).message, /^memoryMB/);

  r = await post('/v3/templates', { name: `${name}-bad` });
  assert.equal(r.status, 202);
  const { templateID, buildID } = await r.json();
  r = await post(`/v2/templates/${templateID}/builds/${buildID}`, { fromImage: 'Not An Image!', steps: [] });
  assert.equal(r.status, 400);
  assert.match((await r.json()).message, /^fromImage/);
  r = await post(`/v2/templates/${templateID}/builds/${buildID}`,
    { fromTemplate: 'base', steps: [{ type: 'FROB', args: [] }] });
  assert.equal(r.status, 400);
  assert.match((await r.json()).message, /^steps\[0\]\.type/);
  r = await post(`/v2/templates/${templateID}/builds/no-such-build`, { fromTemplate: 'base', steps: [] });
  assert.equal(r.status, 404);
  // the SDK names a base template that does not exist: the build fails saying so
  const t = Template().fromTemplate('no-such-base').runCmd('true');
  await assert.rejects(Template.build(t, `${name}-nobase`), /no-such-base/);
});
