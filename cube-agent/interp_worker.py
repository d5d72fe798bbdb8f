# cube-agent's code interpreter worker: one persistent Python process per context. The agent writes one JSON
# request per line on stdin ({"code", "env_vars"}); the worker answers on fd 3 with the E2B NDJSON events
# (stdout/stderr as they happen, results, error) and ends every execution with end_of_execution.
import ast
import base64
import io
import json
import os
import sys
import threading
import time
import traceback

_events = os.fdopen(3, "w", buffering=1)
_emit_lock = threading.Lock()
_streams = []  # the running execution's stdout and stderr


def _emit(obj):
    if obj["type"] not in ("stdout", "stderr"):
        for st in _streams:  # what was printed comes before what follows it
            st.flush()
    _write_event(obj)


def _write_event(obj):
    with _emit_lock:
        _events.write(json.dumps(obj) + "\n")
        _events.flush()


def _executions():
    """Each request from the agent, as (request, its [stdout, stderr] streams), counted."""
    count = 0
    for line in sys.stdin:
        try:
            req = json.loads(line)
        except ValueError:
            continue
        count += 1
        _emit({"type": "number_of_executions", "execution_count": count})
        _streams[:] = [_Stream("stdout"), _Stream("stderr")]
        yield req, list(_streams)


def _end_execution():
    for st in _streams:
        st.flush()
    _streams.clear()
    _emit({"type": "end_of_execution"})


# Output goes out a line at a time, as a terminal shows it: print("x") is one "x\n" event, not "x" then "\n".
# A line still unfinished goes out on flush(), before any other event, at the end, or 0.1 s after it was begun
# (a progress line the code keeps writing to shows up while it runs).
class _Stream(io.TextIOBase):
    def __init__(self, kind):
        self.kind = kind
        self.buf = ""
        self.lock = threading.RLock()
        self.timer = None

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError("write() argument must be str, not %s" % type(s).__name__)
        with self.lock:
            self.buf += s
            cut = self.buf.rfind("\n") + 1
            if cut:
                out, self.buf = self.buf[:cut], self.buf[cut:]
                self._send(out)
            if self.buf and self.timer is None:
                self.timer = threading.Timer(0.1, self.flush)
                self.timer.daemon = True
                self.timer.start()
        return len(s)

    def _send(self, text):
        _write_event({"type": self.kind, "text": text, "timestamp": time.time_ns() // 1000})

    def flush(self):
        with self.lock:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            if self.buf:
                out, self.buf = self.buf, ""
                self._send(out)

    def isatty(self):
        return False

    @property
    def encoding(self):
        return "utf-8"


_FIELDS = ("text", "html", "markdown", "svg", "png", "jpeg", "pdf", "latex", "json", "javascript", "data", "chart", "extra")


def _result(value, main):
    r = dict.fromkeys(_FIELDS)
    r["type"] = "result"
    r["is_main_result"] = main
    fig = _as_figure(value)
    if fig is not None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
        r["png"] = base64.b64encode(buf.getvalue()).decode()
        r["text"] = repr(fig)
        return r
    r["text"] = repr(value)
    # IPython's rich-display protocol; binary formats travel base64-encoded
    for field in ("html", "markdown", "svg", "latex", "json", "javascript", "png", "jpeg"):
        fn = getattr(value, "_repr_%s_" % field, None)
        if not callable(fn):
            continue
        try:
            out = fn()
        except Exception:
            continue
        if field in ("png", "jpeg"):
            if isinstance(out, bytes):
                r[field] = base64.b64encode(out).decode()
        elif out is not None:
            r[field] = out
    return r


def _as_figure(value):
    mpl = sys.modules.get("matplotlib.figure")
    if mpl is not None and isinstance(value, mpl.Figure):
        return value
    return None


def _flush_figures(shown):
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    for num in plt.get_fignums():
        fig = plt.figure(num)
        if id(fig) not in shown:
            _emit(_result(fig, False))
    plt.close("all")


def _run(code, ns):
    tree = ast.parse(code, "<cell>", "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, "<cell>", "exec"), ns)
    value = eval(compile(last, "<cell>", "eval"), ns) if last is not None else None
    shown = set()
    if value is not None:
        if _as_figure(value) is not None:
            shown.add(id(value))
        _flush_figures(shown)
        _emit(_result(value, True))
    else:
        _flush_figures(shown)


def main():
    os.environ.setdefault("MPLBACKEND", "Agg")
    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    real_out, real_err = sys.stdout, sys.stderr
    for req, (sys.stdout, sys.stderr) in _executions():
        env = req.get("env_vars") or {}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update({str(k): str(v) for k, v in env.items()})
        try:
            _run(req.get("code", ""), ns)
        except BaseException as e:  # the user's code may raise anything, KeyboardInterrupt included
            tb = e.__traceback__
            while tb is not None and tb.tb_frame.f_code.co_filename != "<cell>":
                tb = tb.tb_next  # the worker's own frames are noise to the user
            tb = traceback.format_exception(type(e), e, tb)
            _emit({"type": "error", "name": type(e).__name__, "value": str(e), "traceback": "".join(tb)})
        finally:
            _end_execution()
            sys.stdout, sys.stderr = real_out, real_err
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


# bash: one shell kept for the context (variables, functions and the directory carry over), each execution
# its code in a group with stdin from /dev/null, then a marker on stdout (with the exit status) and on stderr
# that the readers below wait for. A non-zero status is an error, as Jupyter's bash kernel reports it.
class _Shell:
    def __init__(self):
        import subprocess
        self.nonce = os.urandom(8).hex()
        self.marker = "\x1eCUBE-END-" + self.nonce + " "
        self.proc = subprocess.Popen(["bash", "--noprofile", "--norc"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.cond = threading.Condition()
        self.targets = [None, None]  # the running execution's streams
        self.done = [None, None]     # each stream's marker status once seen; "eof" when the shell is gone
        for i, f in enumerate((self.proc.stdout, self.proc.stderr)):
            threading.Thread(target=self._read, args=(i, f), daemon=True).start()

    def _read(self, i, f):
        import codecs
        dec = codecs.getincrementaldecoder("utf-8")("replace")
        buf = ""
        while True:
            data = os.read(f.fileno(), 65536)
            buf += dec.decode(data, final=not data)
            while True:
                at = buf.find(self.marker)
                end = buf.find("\x1e\n", at + len(self.marker)) if at >= 0 else -1
                if end < 0:
                    break
                self._out(i, buf[:at])
                status, buf = buf[at + len(self.marker):end], buf[end + 2:]
                with self.cond:
                    self.done[i] = status
                    self.cond.notify_all()
            keep = buf.rfind("\x1e") if buf.rfind("\x1e") > buf.rfind("\n") else len(buf)
            self._out(i, buf[:keep])
            buf = buf[keep:]
            if not data:
                with self.cond:
                    self.done[i] = "eof"
                    self.cond.notify_all()
                return

    def _out(self, i, text):
        if text and self.targets[i] is not None:
            self.targets[i].write(text)

    def run(self, code, env, streams):
        q = lambda v: "'" + str(v).replace("'", "'\\''") + "'"
        names = [k for k in env if k.isidentifier()]
        script = "".join("export %s=%s\n" % (k, q(env[k])) for k in names)
        script += "{\n%s\n} </dev/null\n__cube_rc=$?\n" % code
        script += "".join("unset %s\n" % k for k in names)
        script += "printf '%s%%d\\036\\n' \"$__cube_rc\"; printf '%s0\\036\\n' >&2\n" % (
            self.marker.replace("\x1e", "\\036"), self.marker.replace("\x1e", "\\036"))
        with self.cond:
            self.targets[:] = streams
            self.done[:] = [None, None]
        try:
            self.proc.stdin.write(script.encode())
            self.proc.stdin.flush()
        except OSError:
            return "eof"
        with self.cond:
            while None in self.done:
                self.cond.wait()
            self.targets[:] = [None, None]
            return self.done[0]

    def interrupt(self):
        import signal
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
        except OSError:
            pass


def main_bash():
    shell = _Shell()
    for req, streams in _executions():
        try:
            status = shell.run(req.get("code", ""), req.get("env_vars") or {}, streams)
        except KeyboardInterrupt:
            shell.interrupt()
            status = "interrupted"
        if status in ("eof", "interrupted"):  # the shell ended (exit, or the interrupt): the next is a new one
            shell.proc.kill()
            shell = _Shell()
            name = "KeyboardInterrupt" if status == "interrupted" else "ShellExited"
            _emit({"type": "error", "name": name, "value": "the shell ended; its state is gone", "traceback": ""})
        elif status != "0":
            _emit({"type": "error", "name": "", "value": status, "traceback": ""})
        _end_execution()


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main_bash() if sys.argv[1:] == ["bash"] else main()
