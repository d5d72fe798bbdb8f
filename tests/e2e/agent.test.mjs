// cube-agent driven by the real, unmodified E2B JS SDKs (e2b, @e2b/code-interpreter). The agent runs on
// loopback outside any sandbox; the SDK reaches it in debug mode (localhost:49983 / :49999), which sends no
// access token: agent-token.test.mjs covers the token.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Sandbox, CommandExitError, FileNotFoundError } from 'e2b';
import { Sandbox as CodeSandbox } from '@e2b/code-interpreter';
import { startAgent, startApiDouble, initAgent } from './harness.mjs';

let agent, api, sbx, dir;

before(async () => {
  agent = await startAgent(['--node', process.execPath]);
  await initAgent({ envVars: { CUBE_INIT_VAR: 'from-init' } });
  api = await startApiDouble({});
  process.env.E2B_DEBUG = 'true';
  process.env.E2B_API_URL = api.url;
  process.env.E2B_API_KEY = 'e2b_test_key';
  sbx = await Sandbox.connect('itest0000000000000000');
  dir = mkdtempSync(join(tmpdir(), 'cube-agent-e2e-'));
});

after(async () => {
  await api?.stop();
  await agent?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('commands: stdout, exit codes, envs, cwd', async () => {
  const r = await sbx.commands.run('echo hello; echo oops >&2');
  assert.equal(r.exitCode, 0);
  assert.equal(r.stdout, 'hello\n');
  assert.equal(r.stderr, 'oops\n');

  await assert.rejects(sbx.commands.run('exit 7'), (e) => e instanceof CommandExitError && e.exitCode === 7);

  const env = await sbx.commands.run('echo "$CUBE_INIT_VAR $MINE"', { envs: { MINE: 'per-call' } });
  assert.equal(env.stdout, 'from-init per-call\n');

  const cwd = await sbx.commands.run('pwd', { cwd: dir });
  assert.equal(cwd.stdout.trim(), dir);

  // a command longer than the kernel takes as one argument (128 KiB): a file's text in a heredoc runs too,
  // and what it starts inherits nothing of how it got there (descriptors 0-2 only, and ls's own)
  const text = 'line of a generated file\n'.repeat(12000); // 300,000 bytes
  const long = await sbx.commands.run(`cat > ${dir}/gen.txt <<'EOF'\n${text}EOF\nwc -c < ${dir}/gen.txt\nexit 3`).catch((e) => e);
  assert.equal(long.exitCode, 3, String(long));
  assert.equal(long.stdout, `${text.length}\n`);
  const fds = await sbx.commands.run(`# ${'x'.repeat(200000)}\nls /proc/self/fd | sort -n | tr '\\n' ' '`);
  assert.equal(fds.stdout, '0 1 2 3 ');
});

test('commands and files run as the requested user', async () => {
  const r = await sbx.commands.run('id -un; echo $HOME', { user: 'nobody' });
  assert.equal(r.stdout.split('\n')[0], 'nobody');
  await sbx.files.write(`${dir}/as-root.txt`, 'x');
  assert.equal((await sbx.files.getInfo(`${dir}/as-root.txt`)).owner, 'root');
  // nobody may not write into a root-owned 0700 directory
  await sbx.commands.run(`mkdir -p ${dir}/private && chmod 700 ${dir}/private`);
  await assert.rejects(sbx.files.write(`${dir}/private/x.txt`, 'no', { user: 'nobody' }));
});

test('commands: output streams as it happens', async () => {
  const seen = [];
  const t0 = Date.now();
  await sbx.commands.run('echo one; sleep 0.6; echo two', {
    onStdout: (d) => seen.push([d, Date.now() - t0]),
  });
  assert.deepEqual(seen.map((s) => s[0]).join(''), 'one\ntwo\n');
  // streamed: the first line arrives while the command still sleeps, well before the second
  const gap = seen[seen.length - 1][1] - seen[0][1];
  assert.ok(seen.length >= 2 && gap >= 300, `lines arrived ${gap} ms apart: not streamed`);
});

test('commands: background process, list, connect, kill', async () => {
  const h = await sbx.commands.run('sleep 30', { background: true });
  assert.ok(h.pid > 0);
  const listed = await sbx.commands.list();
  assert.ok(listed.some((p) => p.pid === h.pid && p.cmd === '/bin/bash'), JSON.stringify(listed));
  const again = await sbx.commands.connect(h.pid);
  assert.equal(await sbx.commands.kill(h.pid), true);
  await assert.rejects(again.wait(), (e) => e instanceof CommandExitError);
  assert.equal(await sbx.commands.kill(h.pid), false);
});

test('commands: output waits for a client that reads slowly, instead of piling up in the agent', async () => {
  // a Start stream whose client stops reading while its command writes 200 MB: the agent (PID 1 of a
  // sandbox, within the sandbox's memory) keeps a bounded queue and the command waits on its pipe
  const rssKb = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${agent.proc.pid}/status`, 'utf8'))[1]);
  const total = 200 * 1000 * 1000;
  const body = Buffer.from(JSON.stringify({ process: { cmd: '/bin/bash', args: ['-c', `head -c ${total} /dev/zero; echo; echo END`] } }));
  const frame = Buffer.alloc(5);
  frame.writeUInt32BE(body.length, 1);
  const before = rssKb();
  const req = http.request({ host: '127.0.0.1', port: 49983, method: 'POST', path: '/process.Process/Start', headers: { 'content-type': 'application/connect+json', 'connect-protocol-version': '1' } });
  const res = await new Promise((ok, fail) => { req.on('response', ok); req.on('error', fail); req.end(Buffer.concat([frame, body])); });
  assert.equal(res.statusCode, 200);
  res.pause();
  await sleep(3000); // the command writes 200 MB in well under that when nothing holds it back
  const grown = rssKb() - before;
  // then everything comes, in order, and the command ends
  let buf = Buffer.alloc(0), bytes = 0, tail = '', ended = false;
  res.on('data', (c) => {
    buf = Buffer.concat([buf, c]);
    while (buf.length >= 5 && buf.length >= 5 + buf.readUInt32BE(1)) {
      const msg = JSON.parse(buf.subarray(5, 5 + buf.readUInt32BE(1)).toString());
      buf = buf.subarray(5 + buf.readUInt32BE(1));
      const out = msg.event?.data?.stdout;
      if (out) {
        const d = Buffer.from(out, 'base64');
        bytes += d.length;
        tail = (tail + d.toString('latin1')).slice(-8);
      }
      if (msg.event?.end) ended = true;
    }
  });
  res.resume();
  await new Promise((ok) => res.on('end', ok));
  assert.ok(grown < 64 * 1024, `the agent grew by ${grown} kB while its client did not read`);
  assert.equal(bytes, total + 5);
  assert.equal(tail.slice(-4), 'END\n');
  assert.ok(ended);
});

test('commands: a command whose timeoutMs passes is ended, as envd ends it; timeoutMs 0 runs on', async () => {
  const mark = `timeout-${process.pid}`;
  await assert.rejects(sbx.commands.run(`sleep 30 # ${mark}-a`, { timeoutMs: 1000 }));
  const alive = async (m) => (await sbx.commands.list()).some((p) => p.args.join(' ').includes(m));
  let gone = false;
  for (let i = 0; i < 40 && !gone; i++) gone = !(await alive(`${mark}-a`)) || (await sleep(100), false);
  assert.ok(gone, 'the timed-out command still runs');
  // a background command, its children too (the whole group goes)
  const bg = await sbx.commands.run('sleep 37.1 & sleep 37.2', { background: true, timeoutMs: 800 });
  assert.ok((await bg.wait().catch((e) => e)) instanceof Error); // the SDK gives up at its deadline too
  let left = '';
  for (let i = 0; i < 40 && left !== '0'; i++) {
    left = (await sbx.commands.run('pgrep -f "sleep 37[.][12]" | wc -l')).stdout.trim();
    if (left !== '0') await sleep(100);
  }
  assert.equal(left, '0', 'a child of the timed-out command still runs');
  const forever = await sbx.commands.run(`sleep 30 # ${mark}-c`, { background: true, timeoutMs: 0 });
  await sleep(1500);
  assert.ok(await alive(`${mark}-c`), 'a command without a timeout was ended');
  await forever.kill();
});

test('commands: a client that stops reading does not keep its command past timeoutMs', async () => {
  // the command fills the agent's queue for its stream, so the agent waits for the client: its deadline
  // still ends it
  const mark = `unread-${process.pid}`;
  const body = Buffer.from(JSON.stringify({ process: { cmd: '/bin/bash', args: ['-c', `yes ${mark} # ${mark}`] } }));
  const frame = Buffer.alloc(5);
  frame.writeUInt32BE(body.length, 1);
  const req = http.request({ host: '127.0.0.1', port: 49983, method: 'POST', path: '/process.Process/Start', headers: { 'content-type': 'application/connect+json', 'connect-protocol-version': '1', 'connect-timeout-ms': '1000' } });
  const res = await new Promise((ok, fail) => { req.on('response', ok); req.on('error', fail); req.end(Buffer.concat([frame, body])); });
  assert.equal(res.statusCode, 200);
  res.pause();
  // (it stays listed until its end is sent: its output is still queued for the client)
  const alive = async () => (await sbx.commands.run(`pgrep -xc yes || true`)).stdout.trim() !== '0';
  assert.ok(await alive(), 'the command did not start');
  let gone = false;
  for (let i = 0; i < 50 && !gone; i++) gone = !(await alive()) || (await sleep(100), false);
  res.destroy();
  assert.ok(gone, 'the command runs past its deadline while its client does not read');
});

test('commands: stdin', async () => {
  const h = await sbx.commands.run('read line; echo "got $line"', { background: true, stdin: true });
  await sbx.commands.sendStdin(h.pid, 'typed\n');
  const r = await h.wait();
  assert.equal(r.stdout, 'got typed\n');
});

test('commands: pty', async () => {
  let out = '';
  const decoder = new TextDecoder();
  const term = await sbx.pty.create({ cols: 100, rows: 30, onData: (d) => (out += decoder.decode(d)) });
  await sbx.pty.sendInput(term.pid, new TextEncoder().encode('stty size; tty; exit\n'));
  await term.wait().catch(() => {});
  assert.match(out, /30 100/);
  assert.match(out, /\/dev\/pts\//);
});

test('files: text, binary 256 KiB and 16 MiB, nested parents', async () => {
  await sbx.files.write(`${dir}/a/b/c/hello.txt`, 'hello world');
  assert.equal(await sbx.files.read(`${dir}/a/b/c/hello.txt`), 'hello world');
  // what a write answers: the file written, once (a one-byte file too), and each of several once
  const one = await sbx.files.write(`${dir}/one-byte.txt`, '1');
  assert.equal(one.path, `${dir}/one-byte.txt`, JSON.stringify(one));
  const many = await sbx.files.write([{ path: `${dir}/m/x.txt`, data: 'x' }, { path: `${dir}/m/y.txt`, data: 'yy' }]);
  assert.deepEqual(many.map((e) => e.path), [`${dir}/m/x.txt`, `${dir}/m/y.txt`]);
  assert.equal(await sbx.files.read(`${dir}/m/y.txt`), 'yy');

  const small = randomBytes(256 * 1024);
  await sbx.files.write(`${dir}/small.bin`, new Blob([small]));
  const backSmall = Buffer.from(await sbx.files.read(`${dir}/small.bin`, { format: 'bytes' }));
  assert.ok(backSmall.equals(small));

  const big = randomBytes(16 * 1024 * 1024);
  await sbx.files.write(`${dir}/big.bin`, new Blob([big]));
  const backBig = Buffer.from(await sbx.files.read(`${dir}/big.bin`, { format: 'bytes' }));
  assert.equal(backBig.length, big.length);
  assert.ok(backBig.equals(big));
});

test("files: the kernel's generated files read whole (their size says 0 or 4096)", async () => {
  // /proc's files are 0 bytes long by stat, /sys's 4096: what reading them gives is what comes back
  const status = await sbx.files.read('/proc/self/status');
  assert.match(status, /^Name:\t/);
  assert.match(status, /\nPid:\t\d+\n/);
  const online = await sbx.files.read('/sys/devices/system/cpu/online');
  assert.match(online, /^\d+(-\d+)?(,\d+(-\d+)?)*\n$/);
  // a file of a size that says what it holds still answers a Range
  await sbx.files.write(`${dir}/range.txt`, '0123456789');
  const r = await fetch(`http://127.0.0.1:49983/files?path=${encodeURIComponent(`${dir}/range.txt`)}&username=root`, {
    headers: { Range: 'bytes=2-4' },
  });
  assert.equal(r.status, 206);
  assert.equal(await r.text(), '234');
});

test('files: metadata written with a file comes back with its info, follows a rename, is replaced by the next', async () => {
  const w = await sbx.files.write(`${dir}/meta/report.csv`, 'a,b\n', { metadata: { owner: 'alice', 'build-id': '42' } });
  assert.deepEqual(w.metadata, { owner: 'alice', 'build-id': '42' });
  assert.deepEqual((await sbx.files.getInfo(`${dir}/meta/report.csv`)).metadata, { owner: 'alice', 'build-id': '42' });
  await sbx.files.rename(`${dir}/meta/report.csv`, `${dir}/meta/moved.csv`);
  const listed = await sbx.files.list(`${dir}/meta`);
  assert.deepEqual(listed.map((e) => [e.name, e.metadata]), [['moved.csv', { owner: 'alice', 'build-id': '42' }]]);
  await sbx.files.write(`${dir}/meta/moved.csv`, 'c', { metadata: { owner: 'bob' } });
  assert.deepEqual((await sbx.files.getInfo(`${dir}/meta/moved.csv`)).metadata, { owner: 'bob' });
  // a write without metadata leaves the file's as they are; a file never given any has none
  await sbx.files.write(`${dir}/meta/moved.csv`, 'd');
  assert.deepEqual((await sbx.files.getInfo(`${dir}/meta/moved.csv`)).metadata, { owner: 'bob' });
  await sbx.files.write(`${dir}/meta/plain.txt`, 'p');
  assert.equal((await sbx.files.getInfo(`${dir}/meta/plain.txt`)).metadata, undefined);
});

test('files: list, exists, getInfo, rename, remove, missing', async () => {
  await sbx.files.write(`${dir}/list/one.txt`, '1');
  await sbx.files.makeDir(`${dir}/list/sub`);
  assert.equal(await sbx.files.makeDir(`${dir}/list/sub`), false);
  const names = (await sbx.files.list(`${dir}/list`)).map((e) => `${e.name}:${e.type}`).sort();
  assert.deepEqual(names, ['one.txt:file', 'sub:dir']);
  assert.equal(await sbx.files.exists(`${dir}/list/one.txt`), true);
  assert.equal(await sbx.files.exists(`${dir}/list/nope.txt`), false);
  const info = await sbx.files.getInfo(`${dir}/list/one.txt`);
  assert.equal(info.size, 1);
  assert.equal(info.type, 'file');
  await sbx.files.rename(`${dir}/list/one.txt`, `${dir}/list/two.txt`);
  assert.equal(await sbx.files.read(`${dir}/list/two.txt`), '1');
  await sbx.files.remove(`${dir}/list`);
  assert.equal(await sbx.files.exists(`${dir}/list`), false);
  // a listing too big to build in the sandbox's memory is refused by name, not the agent's death
  await sbx.commands.run(`mkdir -p ${dir}/huge/sub && cd ${dir}/huge/sub && seq 1 50001 | xargs touch`, { timeoutMs: 120000 });
  assert.equal((await sbx.files.list(`${dir}/huge`)).length, 1); // depth 1: the one directory
  await assert.rejects(sbx.files.list(`${dir}/huge`, { depth: 2 }), /more than 50000 entries/);
  await sbx.commands.run(`rm -rf ${dir}/huge`, { timeoutMs: 120000 });
  await assert.rejects(sbx.files.read(`${dir}/missing.txt`), FileNotFoundError);
});

test('files: watchDir reports changes', async () => {
  const events = [];
  const w = await sbx.files.watchDir(dir, (e) => events.push(e), { recursive: true });
  await sbx.files.write(`${dir}/watched.txt`, 'x');
  // a tree made at once (as a clone or an unpacked archive makes one): what lands in a new directory before
  // its watch is added is reported too, ten levels down
  const deep = Array.from({ length: 10 }, (_, i) => `d${i}`).join('/');
  // and a tree moved in whole from elsewhere (unpacked, then moved): its contents are new here too
  await sbx.commands.run(`cd ${dir} && mkdir -p ${deep} && touch ${deep}/leaf.txt && mkdir -p ../moved-${process.pid}/in && touch ../moved-${process.pid}/in/file.txt && mv ../moved-${process.pid} moved && touch tree-done`);
  for (let i = 0; i < 40 && !events.some((e) => e.name === 'tree-done'); i++) await sleep(50);
  for (let i = 0; i < 20 && !events.some((e) => e.name === `${deep}/leaf.txt`); i++) await sleep(50);
  await w.stop();
  assert.ok(events.some((e) => e.name === 'watched.txt' && e.type === 'create'), JSON.stringify(events));
  assert.ok(events.some((e) => e.name === `${deep}/leaf.txt` && e.type === 'create'), JSON.stringify(events));
  assert.ok(events.some((e) => e.name === 'd0/d1' && e.type === 'create'), JSON.stringify(events));
  assert.ok(events.some((e) => e.name === 'moved/in/file.txt' && e.type === 'create'), JSON.stringify(events));
  // with includeEntry (envd 0.6.3) each event carries the entry as it is then, metadata included
  const withEntry = [];
  const w2 = await sbx.files.watchDir(dir, (e) => withEntry.push(e), { includeEntry: true });
  await sbx.files.write(`${dir}/entry.txt`, 'abc', { metadata: { tag: 'x' } });
  for (let i = 0; i < 40 && !withEntry.some((e) => e.entry?.size === 3); i++) await sleep(50);
  await w2.stop();
  const ev = withEntry.find((e) => e.name === 'entry.txt' && e.entry?.size === 3);
  assert.ok(ev, JSON.stringify(withEntry));
  assert.equal(ev.entry.type, 'file');
  assert.deepEqual(ev.entry.metadata, { tag: 'x' });
});

test('runCode: value, state, stdout, error, streaming', async () => {
  const ci = await CodeSandbox.connect('itest0000000000000000');
  const first = await ci.runCode('x = 40\nprint("hi")\nx + 2');
  assert.equal(first.text, '42');
  assert.equal(first.logs.stdout.join(''), 'hi\n');
  const second = await ci.runCode('x * 2');
  assert.equal(second.text, '80');
  // a string's text is its value, without the quotes of its repr, as E2B's server gives it
  assert.equal((await ci.runCode('"hello"')).text, 'hello');
  assert.equal((await ci.runCode('["a"]')).text, "['a']");
  const err = await ci.runCode('1/0');
  assert.equal(err.error.name, 'ZeroDivisionError');
  assert.match(err.error.traceback, /ZeroDivisionError/);
  const streamed = [];
  await ci.runCode('import time\nfor i in range(3):\n    print(i)\n    time.sleep(0.2)\nprint("no newline", end="")', {
    onStdout: (m) => streamed.push(m.line),
  });
  // a line an event, as Jupyter sends them (print's text and its newline are two writes); the unfinished
  // last line too
  assert.deepEqual(streamed, ['0\n', '1\n', '2\n', 'no newline']);
  // a line being written shows while the code runs on
  const parts = [];
  await ci.runCode('import time\nprint("working", end="")\ntime.sleep(0.6)\nprint(" done")', {
    onStdout: (m) => parts.push([m.line, Date.now()]),
  });
  assert.deepEqual(parts.map((p) => p[0]), ['working', ' done\n']);
  assert.ok(parts[1][1] - parts[0][1] >= 400, JSON.stringify(parts));
});

test('runCode in python runs as in Jupyter: shell escapes, magics, display(), rich results, no stdin', async () => {
  // the agent's python3 has IPython (deploy/install-deps; the code-interpreter template has it too)
  const ci = await CodeSandbox.connect('itest0000000000000000');
  const shell = await ci.runCode('!echo from-the-shell\nn = 6');
  assert.equal(shell.error, undefined, JSON.stringify(shell.error));
  assert.match(shell.logs.stdout.join(''), /from-the-shell/);
  const cell = await ci.runCode('%%bash\necho "bash $((n + 1))"');
  assert.equal(cell.logs.stdout.join(''), 'bash 1\n'); // a bash cell: its own shell, no python names
  const pip = await ci.runCode('%pip --version');
  assert.match(pip.logs.stdout.join(''), /^pip \d+/, JSON.stringify(pip));
  // display() puts out results before the main one; a rich object comes back in its formats
  const shown = await ci.runCode('from IPython.display import HTML\ndisplay(HTML("<b>x</b>"))\ndisplay(n)\nn * 7');
  assert.deepEqual(shown.results.map((r) => [r.html ?? r.text, r.isMainResult]), [['<b>x</b>', false], ['6', false], ['42', true]]);
  assert.equal((await ci.runCode('_ + 1')).text, '43'); // the output history works
  const md = await ci.runCode('from IPython.display import Markdown\nMarkdown("# t")');
  assert.equal(md.results[0].markdown, '# t');
  // input() fails at once, as in Jupyter without a frontend; nothing the code runs reads the requests
  const asked = await ci.runCode('input("name? ")', { timeoutMs: 10000 });
  assert.equal(asked.error?.name, 'StdinNotImplementedError', JSON.stringify(asked));
  const read = await ci.runCode('import subprocess, sys\n(sys.stdin.read(), subprocess.run(["cat"], capture_output=True).stdout)', { timeoutMs: 10000 });
  assert.equal(read.text, "('', b'')", JSON.stringify(read));
  assert.equal((await ci.runCode('n')).text, '6'); // the request after them arrived whole
  const syntax = await ci.runCode('def f(:');
  assert.equal(syntax.error?.name, 'SyntaxError');
});

test('runCode in bash: the shell carries over between executions; a failing command is the error', async () => {
  const ci = await CodeSandbox.connect('itest0000000000000000');
  const first = await ci.runCode('x=41; cd /tmp; echo hi', { language: 'bash' });
  assert.equal(first.error, undefined);
  assert.deepEqual(first.logs.stdout, ['hi\n']);
  const second = await ci.runCode('echo $((x + 1)) $(pwd) $PER_RUN', { language: 'bash', envs: { PER_RUN: 'yes' } });
  assert.deepEqual(second.logs.stdout, ['42 /tmp yes\n']);
  const failed = await ci.runCode('ls /no/such/dir', { language: 'bash' });
  assert.equal(failed.error?.value, '2');
  assert.match(failed.logs.stderr.join(''), /No such file/);
  // a bash context of its own starts a fresh shell
  const own = await ci.createCodeContext({ language: 'bash' });
  assert.equal(own.language, 'bash');
  assert.deepEqual((await ci.runCode('echo "x=$x"', { context: own })).logs.stdout, ['x=\n']);
  // languages cube does not run are refused
  await assert.rejects(ci.runCode('1 + 1', { language: 'r' }), /400/);
});

test('runCode in javascript: declarations carry over, console streams, awaits, errors, interrupts', async () => {
  const ci = await CodeSandbox.connect('itest0000000000000000');
  const first = await ci.runCode('const base = 40\nconsole.log("hi", { n: 1 })\nbase + 2', { language: 'js' });
  assert.equal(first.error, undefined);
  assert.equal(first.text, '42');
  assert.deepEqual(first.logs.stdout, ['hi { n: 1 }\n']);
  // the same default context for 'js' and 'javascript'; a promise the cell ends with is awaited
  assert.equal((await ci.runCode('Promise.resolve(base * 2)', { language: 'javascript' })).text, '80');
  // top-level await: the cell runs as an async function, its value what it returns
  const awaited = await ci.runCode('const t0 = Date.now()\nawait new Promise((r) => setTimeout(r, 200))\nreturn Date.now() - t0 >= 190', { language: 'js' });
  assert.equal(awaited.text, 'true', JSON.stringify(awaited));
  // as in a notebook, a cell that awaits keeps its declarations for the next, and its last expression is its
  // value (a last line comment too)
  const fetched = await ci.runCode('const got = await Promise.resolve({ n: 5 })\nlet { n } = got\nfunction twice(v) { return 2 * v }\nawait Promise.resolve(n + 1) // six', { language: 'js' });
  assert.equal(fetched.text, '6', JSON.stringify(fetched));
  assert.equal((await ci.runCode('twice(got.n + n)', { language: 'js' })).text, '20');
  const seen = [];
  await ci.runCode('for (let i = 0; i < 3; i++) { console.log(i); await new Promise((r) => setTimeout(r, 150)) }', {
    language: 'js',
    onStdout: (m) => seen.push([m.line, Date.now()]),
  });
  assert.deepEqual(seen.map((x) => x[0]), ['0\n', '1\n', '2\n']);
  assert.ok(seen[2][1] - seen[0][1] >= 250, 'printed as it ran');
  const failed = await ci.runCode('function f() { throw new TypeError("bad " + base) }\nf()', { language: 'js' });
  assert.equal(failed.error.name, 'TypeError');
  assert.equal(failed.error.value, 'bad 40');
  assert.match(failed.error.traceback, /at f \(<cell>:1/);
  assert.doesNotMatch(failed.error.traceback, /node:vm/);
  const env = await ci.runCode('process.env.PER_RUN', { language: 'js', envs: { PER_RUN: 'yes' } });
  assert.equal(env.text, 'yes'); // a string without its quotes, as E2B gives it
  assert.equal((await ci.runCode('process.env.PER_RUN', { language: 'js' })).text, undefined);
  assert.equal((await ci.runCode('require("node:path").join("a", "b")', { language: 'js' })).text, 'a/b');
  // a loop that never ends is interrupted at the timeout; the context lives on with its state
  await assert.rejects(ci.runCode('while (true) {}', { language: 'js', timeoutMs: 1000 }));
  assert.equal((await ci.runCode('base + 1', { language: 'js' })).text, '41');
  // the worker's raw stdout and stderr lead nowhere: never into the agent's own (the node's log); its stdin
  // is nothing either (the requests come on a descriptor the code does not read by default)
  const fds = await ci.runCode('[0, 1, 2].map((n) => require("fs").readlinkSync(`/proc/self/fd/${n}`))', { language: 'js' });
  assert.equal(fds.text, "[ '/dev/null', '/dev/null', '/dev/null' ]");
  const pyfds = await ci.runCode('import os\n[os.readlink(f"/proc/self/fd/{n}") for n in (0, 1, 2)]');
  assert.equal(pyfds.text, "['/dev/null', '/dev/null', '/dev/null']");
  const stdin = await ci.runCode('await new Promise((r) => { let n = 0; process.stdin.on("data", (d) => (n += d.length)); process.stdin.on("end", () => r(n)) })', { language: 'js', timeoutMs: 10000 });
  assert.equal(stdin.text, '0', JSON.stringify(stdin));
  assert.equal((await ci.runCode('base', { language: 'js' })).text, '40'); // the request after it arrived whole
  // a context of its own starts fresh; its language is named as E2B names it
  const own = await ci.createCodeContext({ language: 'js' });
  assert.equal(own.language, 'javascript');
  assert.equal((await ci.runCode('typeof base', { context: own })).text, 'undefined');
});

test('runCode: contexts keep separate state; env vars per execution', async () => {
  const ci = await CodeSandbox.connect('itest0000000000000000');
  const a = await ci.createCodeContext();
  const b = await ci.createCodeContext({ cwd: dir });
  await ci.runCode('v = "in a"', { context: a });
  assert.equal((await ci.runCode('v', { context: a })).text, 'in a');
  assert.equal((await ci.runCode('v', { context: b })).error.name, 'NameError');
  assert.equal((await ci.runCode('import os; os.getcwd()', { context: b })).text, dir);
  const env = await ci.runCode('import os; os.environ["PER_RUN"]', { context: a, envs: { PER_RUN: 'yes' } });
  assert.equal(env.text, 'yes');
  const listed = (await ci.listCodeContexts()).map((c) => c.id);
  assert.ok(listed.includes(a.id) && listed.includes(b.id));
  await ci.restartCodeContext(a);
  assert.equal((await ci.runCode('v', { context: a })).error.name, 'NameError');
  await ci.removeCodeContext(b);
  assert.ok(!(await ci.listCodeContexts()).some((c) => c.id === b.id));
});

test('runCode: a pandas DataFrame comes back with html', async () => {
  const ci = await CodeSandbox.connect('itest0000000000000000');
  const r = await ci.runCode('import pandas as pd\npd.DataFrame({"a": [1, 2], "b": [3, 4]})');
  assert.equal(r.error, undefined, JSON.stringify(r.error));
  assert.match(r.results[0].html, /<table/);
  assert.match(r.text, /a\s+b/);
  assert.deepEqual(r.results[0].data, { a: [1, 2], b: [3, 4] }); // E2B's result.data: the columns
});

test('runCode: a matplotlib figure comes back as PNG', async () => {
  const ci = await CodeSandbox.connect('itest0000000000000000');
  const r = await ci.runCode('import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()');
  assert.equal(r.error, undefined, JSON.stringify(r.error));
  const png = r.results.find((x) => x.png);
  assert.ok(png, 'no png result');
  assert.ok(Buffer.from(png.png, 'base64').subarray(1, 4).equals(Buffer.from('PNG')));
  // E2B's result.chart: what the figure shows, as data
  assert.equal(png.chart?.type, 'line', JSON.stringify(png.chart));
  assert.deepEqual(png.chart.elements[0].points, [[0, 1], [1, 3], [2, 2]]);
  const charts = await ci.runCode(
    'fig, (left, right) = plt.subplots(1, 2)\nleft.bar(["a", "b"], [3, 1], label="sales")\nright.pie([1, 3], labels=["x", "y"])\n' +
      'left.set_ylabel("revenue (USD)")\nfig.suptitle("Q1")\nfig',
  );
  const chart = charts.results[0].chart;
  assert.equal(chart?.type, 'superchart', JSON.stringify(charts.results[0]));
  assert.equal(chart.title, 'Q1');
  const [bar, pie] = chart.elements;
  assert.deepEqual(bar.elements, [{ label: 'a', value: 3, group: 'sales' }, { label: 'b', value: 1, group: 'sales' }]);
  assert.equal(bar.y_unit, 'USD');
  assert.deepEqual(pie.elements.map((w) => [w.label, w.angle]), [['x', 90], ['y', 270]]);
});
