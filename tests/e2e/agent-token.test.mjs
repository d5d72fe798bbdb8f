// The envd access token: set by /init, then required on every call; the real SDK sends it when the API's
// sandbox record carries it. E2B_SANDBOX_URL points the SDK's envd traffic at the agent directly.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Sandbox } from 'e2b';
import { startAgent, startApiDouble, initAgent } from './harness.mjs';

const token = randomBytes(16).toString('hex');
let agent, api, sbx;

before(async () => {
  agent = await startAgent(['--interp-port', '0']);
  await initAgent({ accessToken: token, envVars: { FROM_INIT: 'yes' } });
  api = await startApiDouble({ envdAccessToken: token });
  delete process.env.E2B_DEBUG;
  process.env.E2B_API_URL = api.url;
  process.env.E2B_API_KEY = 'e2b_test_key';
  process.env.E2B_SANDBOX_URL = 'http://127.0.0.1:49983';
  sbx = await Sandbox.connect('itest0000000000000000');
});

after(async () => {
  await api?.stop();
  await agent?.stop();
});

test('calls without the token are refused', async () => {
  const rpc = await fetch('http://127.0.0.1:49983/process.Process/List', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '{}',
  });
  assert.equal(rpc.status, 401);
  assert.equal((await rpc.json()).code, 'unauthenticated');
  const file = await fetch('http://127.0.0.1:49983/files?path=/etc/hostname');
  assert.equal(file.status, 401);
  const reinit = await fetch('http://127.0.0.1:49983/init', { method: 'POST', body: '{"accessToken":"mine"}' });
  assert.equal(reinit.status, 401);
});

test('the SDK sends the token: commands and files work', async () => {
  const r = await sbx.commands.run('echo "$FROM_INIT"');
  assert.equal(r.stdout, 'yes\n');
  await sbx.files.write('/tmp/cube-token-test.txt', 'signed');
  assert.equal(await sbx.files.read('/tmp/cube-token-test.txt'), 'signed');
});

test('signed download and upload URLs work without the header, and only for their path', async () => {
  const url = await sbx.downloadUrl('/tmp/cube-token-test.txt');
  const ok = await fetch(url);
  assert.equal(ok.status, 200);
  assert.equal(await ok.text(), 'signed');
  const other = new URL(url);
  other.searchParams.set('path', '/etc/hostname');
  assert.equal((await fetch(other)).status, 401);
  const up = await sbx.uploadUrl('/tmp/cube-token-upload.txt');
  const form = new FormData();
  form.append('file', new Blob(['via url']), '/tmp/cube-token-upload.txt');
  const res = await fetch(up, { method: 'POST', body: form });
  assert.equal(res.status, 200, await res.text());
  assert.equal(await sbx.files.read('/tmp/cube-token-upload.txt'), 'via url');
});
