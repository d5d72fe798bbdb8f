#!/usr/bin/env bash
# cube-shim with the real containerd: a containerd of the test's own (its own root, state and socket) with a
# config that registers io.containerd.cube.v2, an image made here from busybox (no registry), and ctr: run and
# read output, exec, pause/resume, kill, delete; malformed ttrpc frames; then nothing may be left behind.
# usage: shim.sh SHIM_DIR (where containerd-shim-cube-v2 and cube-hypervisor are found)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SHIM_DIR=$(cd "$1" && pwd)
[ "$(id -u)" -eq 0 ] || { echo "SKIP shim: needs root (containerd, namespaces)"; exit 77; }
for b in containerd ctr busybox python3; do
  command -v "$b" >/dev/null || { echo "SKIP shim: $b is not installed (deploy/install-deps installs it)"; exit 77; }
done
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }

work=$(mktemp -d /tmp/cube-shim-test-XXXXXX)
NS=cubeshimtest
C="ctr -a $work/containerd.sock -n $NS"
cpid=
cleanup() {
  for t in $($C task ls -q 2>/dev/null); do $C task kill -s SIGKILL "$t" >/dev/null 2>&1; done
  sleep 0.5
  for t in $($C task ls -q 2>/dev/null); do $C task delete "$t" >/dev/null 2>&1; done
  for c in $($C container ls -q 2>/dev/null); do $C container delete "$c" >/dev/null 2>&1; done
  [ -n "$cpid" ] && kill "$cpid" 2>/dev/null && wait "$cpid" 2>/dev/null
  awk -v d="$work/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r | xargs -r -n1 umount -l
  rm -rf "$work"
}
trap cleanup EXIT

{ cat <<TOML
version = 2
root = "$work/root"
state = "$work/state"
[grpc]
  address = "$work/containerd.sock"
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "cube"
TOML
  sed -n '/^\[plugins/,$p' "$ROOT/deploy/containerd/config.toml"
} >"$work/config.toml"
PATH="$SHIM_DIR:$PATH" containerd --config "$work/config.toml" >"$work/containerd.log" 2>&1 &
cpid=$!
for _ in $(seq 100); do $C version >/dev/null 2>&1 && break; sleep 0.1; done
$C version >/dev/null 2>&1 || { echo "FAIL: containerd did not start"; tail -20 "$work/containerd.log"; exit 1; }

IMG=docker.io/library/cube-shim-test:1
python3 "$HERE/make-oci-image.py" "$work/image.tar" "$IMG" && $C image import "$work/image.tar" >/dev/null ||
  { echo "FAIL: image import"; exit 1; }
RT=(--runtime io.containerd.cube.v2)

# 1. run: output and exit status come back
out=$(timeout 60 $C run --rm "${RT[@]}" "$IMG" t1 sh -c 'echo "hello from uid $(id -u)"; cat /etc/motd; exit 3' 2>&1)
rc=$?
[ "$out" = $'hello from uid 0\nmade by the cube-shim test' ] && pass "run prints the container's output" ||
  fail "run output: '$out'"
[ $rc -eq 3 ] && pass "run returns the exit status" || fail "run exit status $rc, want 3"

# 2. a long-running task: exec, pause/resume, kill, delete
timeout 60 $C run -d "${RT[@]}" "$IMG" t2 sleep 1000 || fail "run -d"
state() { $C task ls 2>/dev/null | awk -v t="$1" '$1 == t {print $3}'; }
[ "$(state t2)" = RUNNING ] && pass "task runs" || fail "task state $(state t2)"
m=$(timeout 30 $C task metrics t2 2>&1)
echo "$m" | grep -Eq '^pids.current +[1-9]' && echo "$m" | grep -Eq '^memory.usage_in_bytes +[1-9]' &&
  pass "metrics (Stats)" || fail "metrics: $m"
$C task ps t2 2>/dev/null | grep -q "^$($C task ls | awk '$1 == "t2" {print $2}') " && pass "ps (Pids)" || fail "task ps"
out=$(timeout 30 $C task exec --exec-id e1 t2 sh -c 'ps -o pid,comm | awk "\$1 == 1 {print \$2}"; exit 5' 2>&1)
rc=$?
[ "$out" = sleep ] && [ $rc -eq 5 ] && pass "exec runs inside the container (sees its PID 1), returns its status" ||
  fail "exec: '$out' rc=$rc"
timeout 30 $C task pause t2 && [ "$(state t2)" = PAUSED ] && pass "pause" || fail "pause: $(state t2)"
timeout 30 $C task resume t2 && [ "$(state t2)" = RUNNING ] && pass "resume" || fail "resume: $(state t2)"
out=$(timeout 30 $C task exec --exec-id e2 t2 echo after-resume 2>&1)
[ "$out" = after-resume ] && pass "exec after resume" || fail "exec after resume: '$out'"

# 3. malformed ttrpc frames get error responses; an oversized frame closes that connection; the shim lives on
addr=$(cat "$work/state/io.containerd.runtime.v2.task/$NS/t2/address" 2>/dev/null)
sock=${addr#unix://}
if [ -S "$sock" ]; then
  got=$(python3 "$HERE/ttrpc-frames.py" "$sock" 2>&1)
  want=$'junk-request 3\nunknown-method 12\njunk-payload 3\noversized closed'
  [ "$got" = "$want" ] && pass "malformed ttrpc frames get errors" || fail "ttrpc frames: $got"
  [ "$(state t2)" = RUNNING ] && pass "the shim survives malformed frames" || fail "after bad frames: $(state t2)"
else
  fail "no shim socket in $work/state/.../t2/address ('$addr')"
fi

timeout 30 $C task kill -s SIGKILL t2 || fail "kill"
for _ in $(seq 50); do [ "$(state t2)" = STOPPED ] && break; sleep 0.1; done
[ "$(state t2)" = STOPPED ] && pass "kill stops the task" || fail "after kill: $(state t2)"
timeout 30 $C task delete t2 >/dev/null && pass "task delete" || fail "task delete"
$C container delete t2 || fail "container delete"

# 4. nothing left behind (a shim exits after answering Shutdown: give it a moment)
for _ in $(seq 50); do pgrep -f containerd-shim-cube-v2 >/dev/null || break; sleep 0.1; done
pgrep -f "cube-hypervisor --id ctr-" >/dev/null && fail "a cube-hypervisor survived" || pass "no hypervisor left"
pgrep -f containerd-shim-cube-v2 >/dev/null && fail "a shim survived" || pass "no shim left"
left=$(awk -v d="$work/" 'index($2, d) == 1 && $2 !~ /\/root\/io.containerd/ {print $2}' /proc/self/mounts)
[ -z "$left" ] && pass "no container mount left" || fail "mounts left: $left"
ls /sys/fs/cgroup/*/cube/ 2>/dev/null | grep -q '^ctr-' && fail "a cgroup survived" || pass "no cgroup left"
[ -z "$(ls /run/cube-shim 2>/dev/null)" ] && pass "no shim state left" || fail "left in /run/cube-shim: $(ls /run/cube-shim)"

[ $failures -eq 0 ] || { echo "--- containerd log"; grep -v 'loading plugin\|skip loading' "$work/containerd.log" | tail -30; }
echo "$failures failure(s)"
[ $failures -eq 0 ]
