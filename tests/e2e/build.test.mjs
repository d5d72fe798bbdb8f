// Template builds through the unmodified E2B SDK (Template.build) on the stack deploy/cube up starts: every
// step's effect in the sandboxes of the built template, the layer cache on a rebuild, a failing step's output,
// and bad input refused with the field named.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, symlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Sandbox, Template, BuildError } from 'e2b';

const root = process.env.CUBE_ROOT || new URL('../..', import.meta.url).pathname;
const data = process.env.CUBE_STACK_DATA || '/var/lib/cube-e2e';
const port = Number(process.env.CUBE_STACK_PORT || 3310);
const cube = (...args) => execFileSync(`${root}/deploy/cube`, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
const name = `sdk-built-${process.pid}`;
// in each step a comment unique to this run: the node's layer cache outlives a run (a rerun on the same data
// directory must not find these steps already built)
const runTag = `# run ${process.pid}-${Date.now().toString(36)}`;
let ctxDir;

before(() => {
  const out = cube('up', '--data', data, '--port', String(port));
  for (const m of out.matchAll(/^export (\w+)=(.*)$/gm)) process.env[m[1]] = m[2];
  delete process.env.E2B_DEBUG;
  // the build context: a directory with a file, a file deeper down and a symlink
  ctxDir = mkdtempSync(path.join(tmpdir(), 'cube-build-ctx-'));
  mkdirSync(path.join(ctxDir, 'app', 'sub'), { recursive: true });
  writeFileSync(path.join(ctxDir, 'app', 'hello.txt'), 'hello from the context\n');
  writeFileSync(path.join(ctxDir, 'app', 'sub', 'deep.txt'), 'deep\n');
  symlinkSync('hello.txt', path.join(ctxDir, 'app', 'link'));
});

after(() => {
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
  r = await post(`/v2/templates/${templateID}/builds/${buildID}`, { fromImage: 'python:3', steps: [] });
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
