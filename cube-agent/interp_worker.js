// cube-agent's code interpreter worker for JavaScript and TypeScript: one persistent Node.js process per
// context, the same protocol as interp_worker.py. The agent writes one JSON request per line on fd 4
// ({"code", "env_vars"}; stdin is /dev/null); the worker answers on fd 3 with the E2B NDJSON events
// (stdout/stderr as they happen, the last expression's value as the main result, error) and ends every
// execution with end_of_execution. Each cell runs as a script in one vm context kept for the context's life:
// its top-level declarations carry over, a promise it ends with is awaited, and a cell with a top-level await
// runs as an async function (its value is what it returns). TypeScript is transpiled first (Debian's node-typescript).
'use strict';
const fs = require('fs');
const readline = require('readline');
const util = require('util');
const vm = require('vm');
const Module = require('module');
const path = require('path');

const language = process.argv[process.argv.length - 1];
const FIELDS = ['text', 'html', 'markdown', 'svg', 'png', 'jpeg', 'pdf', 'latex', 'json', 'javascript', 'data',
  'chart', 'extra'];

function emit(obj) {
  fs.writeSync(3, JSON.stringify(obj) + '\n');
}

// What the code writes goes out as it is written, through process.stdout/stderr (console uses them too).
function capture(stream, kind) {
  stream.write = (chunk, encoding, cb) => {
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    if (text) emit({ type: kind, text, timestamp: Date.now() * 1000 });
    if (typeof encoding === 'function') encoding();
    else if (typeof cb === 'function') cb();
    return true;
  };
}
capture(process.stdout, 'stdout');
capture(process.stderr, 'stderr');

// require() and import() resolve from the context's directory first, then where Debian keeps node modules.
const requireHere = Module.createRequire(path.join(process.cwd(), 'cell.js'));
const sandbox = {
  console, process, require: requireHere, module: { exports: {} }, Buffer,
  setTimeout, clearTimeout, setInterval, clearInterval, setImmediate, clearImmediate, queueMicrotask,
  URL, URLSearchParams, TextEncoder, TextDecoder, structuredClone, fetch: globalThis.fetch,
  AbortController, atob, btoa, performance,
};
sandbox.exports = sandbox.module.exports;
sandbox.globalThis = sandbox;
const context = vm.createContext(sandbox);

let ts = null;
function transpile(code) {
  if (!ts) {
    try {
      ts = requireHere('typescript');
    } catch (e) {
      throw new Error('TypeScript is not installed in this sandbox (Debian package node-typescript)');
    }
  }
  const out = ts.transpileModule(code, {
    compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.CommonJS, esModuleInterop: true },
    reportDiagnostics: false,
  });
  return out.outputText.replace(/^"use strict";\s*/, '').replace(/^Object\.defineProperty\(exports, "__esModule".*\n/m, '');
}

function result(value) {
  const r = { type: 'result', is_main_result: true };
  for (const f of FIELDS) r[f] = null;
  r.text = util.inspect(value, { depth: 4, colors: false }); // as Node's REPL shows it
  // a string's value without its quotes, as E2B's server gives it
  if (r.text.length >= 2 && r.text[0] === r.text[r.text.length - 1] && (r.text[0] === "'" || r.text[0] === '"')) {
    r.text = r.text.slice(1, -1);
  }
  return r;
}

function isAwaitError(e) {
  // (compiled in another realm: its own SyntaxError)
  return e && e.name === 'SyntaxError' && /await is only valid|Unexpected reserved word/.test(e.message);
}

// An interrupt (the agent's SIGINT after a timeout or a client gone): a script running stops where it is
// (breakOnSigint); a promise being awaited is abandoned.
let abandon = null;
process.on('SIGINT', () => {
  if (abandon) abandon(Object.assign(new Error('execution interrupted'), { name: 'KeyboardInterrupt' }));
});

// A cell with a top-level await becomes what Node's REPL makes of it (the worker runs with --expose-internals
// for this): an async function whose declarations stay in the context for the next cells and whose last
// expression is its value. Where that transform is missing or refuses the cell (one with a top-level return),
// the cell runs as the body of an async function: its value is what it returns.
let replAwait = null;
try {
  replAwait = require('internal/repl/await').processTopLevelAwait;
} catch (e) {
  replAwait = null;
}

function withTopLevelAwait(code) {
  let wrapped = null;
  try {
    wrapped = replAwait ? replAwait(code + '\n') : null; // the newline: a last line comment ends there
  } catch (e) {
    wrapped = null;
  }
  if (wrapped) {
    const out = vm.runInContext(wrapped, context, { filename: '<cell>', breakOnSigint: true });
    return out.then((r) => r && r.value);
  }
  return vm.runInContext('(async () => {\n' + code + '\n})()', context, {
    filename: '<cell>', breakOnSigint: true, lineOffset: -1,
  });
}

function settle(value) {
  return Promise.race([value, new Promise((_, reject) => { abandon = reject; })]).finally(() => {
    abandon = null;
  });
}

async function run(code) {
  if (language === 'typescript') code = transpile(code);
  let value;
  try {
    value = vm.runInContext(code, context, { filename: '<cell>', breakOnSigint: true });
  } catch (e) {
    if (!isAwaitError(e)) throw e;
    value = await settle(withTopLevelAwait(code));
  }
  if (value && typeof value.then === 'function') value = await settle(value);
  if (value !== undefined) emit(result(value));
}

function errorEvent(e) {
  if (e instanceof Error || (e && typeof e === 'object' && 'message' in e)) {
    const name = /interrupted by .?SIGINT/.test(String(e.message)) ? 'KeyboardInterrupt' : String(e.name || 'Error');
    // the worker's own frames (vm, this file) are noise to the user: the stack ends with the cell's last
    const lines = String(e.stack || '').split('\n');
    let last = lines.length - 1;
    while (last > 0 && !lines[last].includes('<cell>')) last--;
    return { type: 'error', name, value: String(e.message), traceback: lines.slice(0, last + 1).join('\n') };
  }
  return { type: 'error', name: 'Error', value: util.inspect(e), traceback: '' };
}

let count = 0;
const queue = [];
let running = false;
let closed = false; // stdin ended: exit once what came is done
async function drain() {
  if (running) return;
  running = true;
  while (queue.length) {
    const line = queue.shift();
    let req;
    try {
      req = JSON.parse(line);
    } catch (e) {
      continue;
    }
    count++;
    emit({ type: 'number_of_executions', execution_count: count });
    const env = req.env_vars || {};
    const saved = {};
    for (const k of Object.keys(env)) {
      saved[k] = process.env[k];
      process.env[k] = String(env[k]);
    }
    try {
      await run(String(req.code || ''));
    } catch (e) {
      emit(errorEvent(e));
    } finally {
      for (const k of Object.keys(saved)) {
        if (saved[k] === undefined) delete process.env[k];
        else process.env[k] = saved[k];
      }
      // the agent looks for this line as Python's json writes it
      fs.writeSync(3, '{"type": "end_of_execution"}\n');
    }
  }
  running = false;
  if (closed) process.exit(0);
}

// code that fails later (a rejected promise nobody awaited, an error thrown from a timer) is reported, and
// the context lives on, as in a notebook
process.on('unhandledRejection', (e) => emit({ type: 'stderr', text: 'Unhandled rejection: ' + util.inspect(e) + '\n', timestamp: Date.now() * 1000 }));
process.on('uncaughtException', (e) => emit({ type: 'stderr', text: 'Uncaught ' + String((e && e.stack) || e) + '\n', timestamp: Date.now() * 1000 }));

const rl = readline.createInterface({ input: fs.createReadStream(null, { fd: 4 }), terminal: false });
rl.on('line', (line) => {
  queue.push(line);
  drain();
});
rl.on('close', () => {
  closed = true;
  if (!running) process.exit(0);
});
