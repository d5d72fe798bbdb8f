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
    with _emit_lock:
        _events.write(json.dumps(obj) + "\n")
        _events.flush()


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
        with _emit_lock:
            _events.write(json.dumps({"type": self.kind, "text": text, "timestamp": time.time_ns() // 1000}) + "\n")
            _events.flush()

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
    count = 0
    real_out, real_err = sys.stdout, sys.stderr
    for line in sys.stdin:
        try:
            req = json.loads(line)
        except ValueError:
            continue
        count += 1
        _emit({"type": "number_of_executions", "execution_count": count})
        env = req.get("env_vars") or {}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update({str(k): str(v) for k, v in env.items()})
        sys.stdout, sys.stderr = _Stream("stdout"), _Stream("stderr")
        _streams[:] = [sys.stdout, sys.stderr]
        try:
            _run(req.get("code", ""), ns)
        except BaseException as e:  # the user's code may raise anything, KeyboardInterrupt included
            tb = e.__traceback__
            while tb is not None and tb.tb_frame.f_code.co_filename != "<cell>":
                tb = tb.tb_next  # the worker's own frames are noise to the user
            tb = traceback.format_exception(type(e), e, tb)
            _emit({"type": "error", "name": type(e).__name__, "value": str(e), "traceback": "".join(tb)})
        finally:
            for st in _streams:
                st.flush()
            _streams.clear()
            sys.stdout, sys.stderr = real_out, real_err
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            _emit({"type": "end_of_execution"})


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
