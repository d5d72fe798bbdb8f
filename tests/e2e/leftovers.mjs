// What a stopped stack must not leave on the node (deploy/cube down): shared by the end-to-end suites.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';

// data: the stack's data directory; port: its API port (sandbox veths are named after it)
export function assertNothingLeft(data, port) {
  const procs = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes(data));
  assert.deepEqual(procs, [], 'processes of the stack survived');
  assert.ok(!readFileSync('/proc/self/mounts', 'utf8').includes(`${data}/`), 'a mount survived');
  const links = execFileSync('ls', ['/sys/class/net'], { encoding: 'utf8' }).split('\n');
  assert.deepEqual(links.filter((l) => new RegExp(`^c${port % 10000}n\\d+$`).test(l)), [], 'a sandbox veth survived');
  const ns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  assert.ok(!/^cube-/m.test(ns), `network namespaces left: ${ns}`);
  for (const c of ['memory', 'pids', 'cpu', 'freezer']) {
    let left = [];
    try {
      left = execFileSync('ls', [`/sys/fs/cgroup/${c}/cube`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
        .trim()
        .split('\n')
        .filter(Boolean);
    } catch {}
    assert.deepEqual(left, [], `cgroups left in ${c}`);
  }
  // the sandboxes' disks: loop devices that clear themselves when their mounts go
  const loops = execFileSync('losetup', ['-l', '-n', '-O', 'BACK-FILE'], { encoding: 'utf8' });
  assert.ok(!loops.includes(`${data}/`), `loop devices left: ${loops}`);
  // their files: copies of a disk template, beside it, unlinked once a loop device holds them
  const disks = `${data}/disks`;
  const copies = existsSync(disks) ? readdirSync(disks).filter((f) => !/^ext4-\d+m(-\w+)?\.img$/.test(f)) : [];
  assert.deepEqual(copies, [], 'sandbox disk copies left');
}
