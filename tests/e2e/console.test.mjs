// The web console (cube-api's /console) in a real browser: Debian's chromium, headless, driven by
// playwright-core, against the stack that deploy/cube up starts; the E2B SDK checks what the page did.
// Screenshots of each page go to $CUBE_CONSOLE_SHOTS (default: console-shots/ in the working directory).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { Sandbox, SandboxNotFoundError, Template } from 'e2b';
import { chromium } from 'playwright-core';

const root = process.env.CUBE_ROOT || new URL('../..', import.meta.url).pathname;
const data = process.env.CUBE_STACK_DATA || '/var/lib/cube-e2e';
const port = Number(process.env.CUBE_STACK_PORT || 3310);
const browserPath = process.env.CUBE_CHROMIUM || '/usr/bin/chromium';
const shots = path.resolve(process.env.CUBE_CONSOLE_SHOTS || 'console-shots');
const cube = (...args) => execFileSync(`${root}/deploy/cube`, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });

let browser;
let page;
const consoleUrl = `http://127.0.0.1:${port}/console/`;

before(async () => {
  const out = cube('up', '--data', data, '--port', String(port), '--pool-size', '2');
  for (const m of out.matchAll(/^export (\w+)=(.*)$/gm)) process.env[m[1]] = m[2];
  delete process.env.E2B_DEBUG;
  mkdirSync(shots, { recursive: true });
  browser = await chromium.launch({
    executablePath: browserPath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  page = await browser.newPage({ viewport: { width: 1366, height: 900 } });
  // what the page logs or throws shows in the test's output
  page.on('console', (m) => m.type() === 'error' && console.log(`[page] ${m.text()}`));
  page.on('pageerror', (e) => console.log(`[page error] ${e.message}`));
});

after(async () => {
  await browser?.close();
  cube('down', '--data', data);
});

const shot = (name) => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });

async function signIn(key) {
  await page.goto(consoleUrl);
  await page.fill('#apikey', key);
  await page.press('#apikey', 'Enter');
}

test('a wrong key is refused in words', async () => {
  await signIn('e2b_not_a_key_of_this_cube');
  const err = page.locator('#signin-error');
  await err.waitFor({ state: 'visible' });
  assert.match(await err.textContent(), /API key was not accepted/);
  assert.equal(await page.locator('#nav').isVisible(), false);
  await shot('sign-in-wrong-key');
});

test('a sandbox made by the SDK: listed with its metadata, terminal, upload, snapshot and rollback, pause, resume, kill', async () => {
  const sbx = await Sandbox.create({ metadata: { owner: 'console-test', purpose: 'browser' } });
  let snapId;
  try {
    await signIn(process.env.E2B_API_KEY);
    const row = page.locator(`tr[data-sandbox="${sbx.sandboxId}"]`);
    await row.waitFor();
    const text = await row.textContent();
    assert.match(text, /owner=console-test/);
    assert.match(text, /purpose=browser/);
    assert.match(text, /running/);
    await row.locator('td', { hasText: /% of 2 vCPU/ }).waitFor(); // its live usage (bulk metrics)
    await shot('sandboxes');

    // search narrows the list to it
    await page.fill('#filter', 'owner=console-test');
    assert.equal(await page.locator('tbody tr[data-sandbox]').count(), 1);

    await row.locator('a').click();
    await page.locator('#sandbox-state').waitFor();
    assert.match(await page.locator('#view h1').textContent(), new RegExp(sbx.sandboxId));

    // the terminal: a PTY through the sandbox's envd
    await page.click('#open-terminal');
    await page.waitForFunction(() => /pid \d+/.test(document.querySelector('#terminal-state')?.textContent || ''));
    await page.waitForFunction(() => /\$ $/.test((document.querySelector('#terminal .xterm-rows')?.textContent || '').trim() + ' '));
    await page.locator('#terminal .xterm-helper-textarea').focus();
    await page.keyboard.type('echo "from the console: $((6*7)) as $(id -un)"');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => /from the console: 42 as user/.test(document.querySelector('#terminal .xterm-rows')?.textContent || ''), null, { timeout: 15000 });
    // the command really ran in the sandbox: it leaves a file the SDK reads
    await page.keyboard.type('echo typed > /tmp/typed-in-console');
    await page.keyboard.press('Enter');
    let typed = '';
    for (let i = 0; i < 50 && typed !== 'typed\n'; i++) {
      typed = await sbx.files.read('/tmp/typed-in-console').catch(() => '');
      if (typed !== 'typed\n') await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(typed, 'typed\n');

    // upload a file; the SDK reads it back
    await page.setInputFiles('#upload', { name: 'from-browser.txt', mimeType: 'text/plain', buffer: Buffer.from('uploaded through the console\n') });
    await page.locator('#notice', { hasText: 'Uploaded /home/user/from-browser.txt' }).waitFor();
    assert.equal(await sbx.files.read('/home/user/from-browser.txt'), 'uploaded through the console\n');
    await page.locator('tr[data-file="from-browser.txt"]').waitFor();
    await page.locator('#logs', { hasText: 'agent ready' }).waitFor();
    await shot('sandbox');

    // a snapshot taken in the page; a later change is undone by rolling back to it there
    await page.click('#take-snapshot');
    await page.locator('#notice', { hasText: 'Snapshot taken' }).waitFor();
    const snapRow = page.locator('#snapshots tr[data-snapshot]').first();
    await snapRow.waitFor();
    snapId = await snapRow.getAttribute('data-snapshot');
    await sbx.files.write('/home/user/from-browser.txt', 'changed after the snapshot\n');
    page.once('dialog', (d) => d.accept());
    await snapRow.locator('button.rollback').click();
    await page.locator('#notice', { hasText: 'Rolled back to' }).waitFor({ timeout: 30000 });
    assert.equal(await sbx.files.read('/home/user/from-browser.txt'), 'uploaded through the console\n');
    await shot('sandbox-rolled-back');

    // pause and resume from the page; the SDK sees each
    await page.click('#pause');
    await page.locator('#sandbox-state', { hasText: 'paused' }).waitFor();
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'paused');
    await shot('sandbox-paused');
    await page.click('#resume');
    await page.locator('#sandbox-state', { hasText: 'running' }).waitFor();
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'running');
    assert.equal((await sbx.commands.run('cat /home/user/from-browser.txt')).stdout, 'uploaded through the console\n');

    // kill (the page asks first), then it is gone from the page and for the SDK
    page.once('dialog', (d) => d.accept());
    await page.click('#kill');
    await page.locator('#gone').waitFor();
    await assert.rejects(Sandbox.getInfo(sbx.sandboxId), SandboxNotFoundError);
    await page.goto(`${consoleUrl}#/sandboxes`);
    await page.locator('table[aria-label="Sandboxes"] tbody tr').first().waitFor();
    assert.equal(await page.locator(`tr[data-sandbox="${sbx.sandboxId}"]`).count(), 0);
  } finally {
    await sbx.kill().catch(() => {});
    if (snapId) await Sandbox.deleteSnapshot(snapId).catch(() => {});
  }
});

test('templates, volumes, nodes and API keys pages; a key made in the page works, then is revoked', async () => {
  // a template built with the SDK: its builds, tags and build log in the page
  const built = `console-built-${process.pid}`;
  await Template.build(Template().fromTemplate('base').runCmd(`echo from-the-console-test-${Date.now()} > /tmp/m`), built);
  try {
    await page.goto(`${consoleUrl}#/templates`);
    await page.locator('table[aria-label="Templates"] td', { hasText: 'code-interpreter-v1' }).waitFor();
    await page.locator('table[aria-label="Templates"] button', { hasText: built }).click();
    const builds = page.locator(`table[aria-label="Builds of ${built}"] tbody tr`);
    await builds.first().waitFor();
    assert.match(await builds.first().textContent(), /ready/);
    assert.match(await page.locator('#template-detail').textContent(), /default →/);
    await builds.first().locator('button', { hasText: 'Log' }).click();
    await page.locator('#build-log', { hasText: /built in/ }).waitFor();
    await shot('templates');
  } finally {
    await fetch(`${process.env.E2B_API_URL}/templates/${built}`, { method: 'DELETE', headers: { 'X-API-KEY': process.env.E2B_API_KEY } });
  }

  await page.goto(`${consoleUrl}#/nodes`);
  const node = page.locator('table[aria-label="Nodes"] tbody tr').first();
  await node.waitFor();
  assert.match(await node.textContent(), /ready/);
  assert.match(await node.textContent(), /base \d+ \/ \d+/);
  assert.match(await node.textContent(), /[\d.]+ GB memory, \d+ GB disk/); // left for sandboxes
  await shot('nodes');

  await page.goto(`${consoleUrl}#/volumes`);
  await page.fill('#volume-name', 'console-vol');
  await page.press('#volume-name', 'Enter');
  await page.locator('table[aria-label="Volumes"] td', { hasText: 'console-vol' }).waitFor();
  await shot('volumes');
  page.once('dialog', (d) => d.accept());
  await page.locator('table[aria-label="Volumes"] tr', { hasText: 'console-vol' }).getByRole('button', { name: 'Delete' }).click();
  await page.locator('table[aria-label="Volumes"] td', { hasText: 'console-vol' }).waitFor({ state: 'detached' });

  await page.goto(`${consoleUrl}#/keys`);
  await page.fill('#key-name', 'made-in-console');
  await page.fill('#key-limit', '3');
  await page.press('#key-name', 'Enter');
  const key = (await page.locator('#new-key').textContent()).trim();
  assert.match(key, /^e2b_/);
  const list = (k) => fetch(`${process.env.E2B_API_URL}/v2/sandboxes`, { headers: { 'X-API-KEY': k } });
  assert.equal((await list(key)).status, 200);
  const row = page.locator('table[aria-label="API keys"] tr', { hasText: 'made-in-console' });
  await row.locator('td', { hasText: '0 of 3' }).waitFor();
  // its limit changed in the page: the key's creates follow it
  page.once('dialog', (d) => d.accept('5'));
  await row.getByRole('button', { name: 'Set limit' }).click();
  await row.locator('td', { hasText: '0 of 5' }).waitFor();
  await shot('api-keys');
  page.once('dialog', (d) => d.accept());
  await page.locator('table[aria-label="API keys"] tr', { hasText: 'made-in-console' }).getByRole('button', { name: 'Revoke' }).click();
  await page.locator('table[aria-label="API keys"] td', { hasText: 'made-in-console' }).waitFor({ state: 'detached' });
  assert.equal((await list(key)).status, 401);
});

test('cube-proxy lets only the console\'s origin call the agents across origins', async () => {
  const preflight = (origin) => fetch(`${process.env.E2B_SANDBOX_URL}/process.Process/Start`, {
    method: 'OPTIONS',
    headers: { Origin: origin, 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type,e2b-sandbox-id' },
  });
  const ok = await preflight(`http://127.0.0.1:${port}`);
  assert.equal(ok.status, 204);
  assert.equal(ok.headers.get('access-control-allow-origin'), `http://127.0.0.1:${port}`);
  const other = await preflight('http://elsewhere.example');
  assert.equal(other.headers.get('access-control-allow-origin'), null);
});
