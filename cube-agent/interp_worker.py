# cube-agent's code interpreter worker: one persistent Python process per context. The agent writes one JSON
# request per line on fd 4 ({"code", "env_vars"}); the worker answers on fd 3 with the E2B NDJSON events
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
    line = json.dumps(obj, default=str)  # a value JSON has no type for (a timestamp in a table) as its text
    with _emit_lock:
        _events.write(line + "\n")
        _events.flush()


# The agent's requests come on fd 4 (stdin is /dev/null, as a Jupyter kernel's is: nothing the code reads
# takes the next execution's request).
_requests = os.fdopen(4, "r", encoding="utf-8", errors="replace")
os.set_inheritable(3, False)  # neither channel is the code's children's (os.system, a shell escape)
os.set_inheritable(4, False)


class StdinNotImplementedError(RuntimeError):
    pass


def _no_input(prompt=""):
    raise StdinNotImplementedError("input() was called, but this interpreter does not support input requests")


def _executions():
    """Each request from the agent, as (request, its [stdout, stderr] streams), counted."""
    count = 0
    for line in _requests:
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
# Jupyter's MIME types as E2B's result fields; others travel under their MIME type (the SDK's result.extra)
_MIME_FIELDS = {"text/plain": "text", "text/html": "html", "text/markdown": "markdown", "image/svg+xml": "svg",
                "image/png": "png", "image/jpeg": "jpeg", "application/pdf": "pdf", "text/latex": "latex",
                "application/json": "json", "application/javascript": "javascript", "e2b/chart": "chart",
                "e2b/data": "data"}


def _bundle_result(data, main):
    """A result event from a MIME bundle (what Jupyter's display machinery gives); binary data base64."""
    r = dict.fromkeys(_FIELDS)
    r["type"] = "result"
    r["is_main_result"] = main
    for mime, value in data.items():
        if isinstance(value, (bytes, bytearray)):
            value = base64.b64encode(value).decode()
        r[_MIME_FIELDS.get(mime, mime)] = value
    text = r["text"]
    if isinstance(text, str) and len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        r["text"] = text[1:-1]  # a string's value without its quotes, as E2B's server gives it
    return r


_shown = set()  # the figures the running execution has put out already


def _figure_png(fig):
    _shown.add(id(fig))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


# E2B's chart and data results: what a matplotlib figure shows, as data (result.chart: line, scatter, bar and
# pie charts, a superchart of a figure's several axes, else "unknown"), and a pandas DataFrame's columns
# (result.data), beside the figure's PNG and the frame's HTML.
def _plain(v):
    import datetime
    if isinstance(v, (datetime.date, datetime.datetime)):
        return v.isoformat()
    np = sys.modules.get("numpy")
    if np is not None and isinstance(v, np.datetime64):
        return str(np.datetime_as_string(v, unit="s"))
    if np is not None and isinstance(v, np.generic):
        return v.item()
    return v


def _unit(label):
    import re
    m = re.search(r"\s\((.*?)\)|\[(.*?)\]", label or "")
    return (m.group(1) or m.group(2)) if m else None


def _axis_info(ax, which):
    axis = ax.xaxis if which == "x" else ax.yaxis
    ticks = [float(t) for t in (ax.get_xticks() if which == "x" else ax.get_yticks())]
    labels = [t.get_text() for t in (ax.get_xticklabels() if which == "x" else ax.get_yticklabels())]
    scale = ax.get_xscale() if which == "x" else ax.get_yscale()
    if type(axis.get_major_formatter()).__module__ == "matplotlib.dates":
        import matplotlib.dates
        scale, ticks = "datetime", [matplotlib.dates.num2date(t).isoformat() for t in ticks]
    elif scale == "linear" and ticks and all(t == i and labels[i] != str(i) for i, t in enumerate(ticks[:len(labels)])):
        scale = "categorical"  # ticks 0..n-1 under names of their own: categories
    return {which + "_ticks": ticks, which + "_tick_labels": labels, which + "_scale": scale}


def _chart_2d(ax, kind):
    xl, yl = ax.get_xlabel() or None, ax.get_ylabel() or None
    return {"type": kind, "title": ax.get_title() or None, "x_label": xl, "y_label": yl, "x_unit": _unit(xl),
            "y_unit": _unit(yl), "elements": []}


def _axes_chart(ax):
    from matplotlib.collections import PathCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle, Wedge
    from matplotlib.text import Text
    artists = [a for a in getattr(ax, "_children", []) if not isinstance(a, Text)]
    if artists and all(isinstance(a, Line2D) for a in artists):
        c = dict(_chart_2d(ax, "line"), **_axis_info(ax, "x"), **_axis_info(ax, "y"))
        for i, line in enumerate(ax.get_lines()):
            label = line.get_label()
            c["elements"].append({"label": "Line %d" % i if label.startswith("_") else label,
                                  "points": [[_plain(x), _plain(y)] for x, y in zip(line.get_xdata(), line.get_ydata())]})
        return c
    if artists and all(isinstance(a, PathCollection) for a in artists):
        c = dict(_chart_2d(ax, "scatter"), **_axis_info(ax, "x"), **_axis_info(ax, "y"))
        for i, coll in enumerate(ax.collections):
            label = coll.get_label()
            c["elements"].append({"label": "Series %d" % i if label.startswith("_") else label,
                                  "points": [[_plain(x), _plain(y)] for x, y in coll.get_offsets()]})
        return c
    if artists and all(isinstance(a, Wedge) for a in artists):
        return {"type": "pie", "title": ax.get_title() or None,
                "elements": [{"label": w.get_label(), "angle": abs(round(w.theta2 - w.theta1, 4)), "radius": w.r}
                             for w in artists]}
    if artists and all(isinstance(a, Rectangle) for a in artists):
        c = _chart_2d(ax, "bar")
        for i, bars in enumerate(ax.containers):
            horizontal = getattr(bars, "orientation", None) == "horizontal"
            names = [t.get_text() for t in (ax.get_yticklabels() if horizontal else ax.get_xticklabels())]
            where = [r.get_y() + r.get_height() / 2 if horizontal else r.get_x() + r.get_width() / 2 for r in bars]
            ticks = list(ax.get_yticks() if horizontal else ax.get_xticks())
            values = getattr(bars, "datavalues", None)
            if values is None:
                values = [r.get_width() if horizontal else r.get_height() for r in bars]
            group = bars.get_label()
            for pos, value in zip(where, values):
                near = min(range(len(ticks)), key=lambda k: abs(ticks[k] - pos)) if ticks else -1
                label = names[near] if 0 <= near < len(names) and abs(ticks[near] - pos) < 0.5 else str(_plain(pos))
                c["elements"].append({"label": label, "value": _plain(value),
                                      "group": "Group %d" % i if group.startswith("_") else group})
            if horizontal:  # the categories are on y: as E2B gives it, the axes' names swap
                c["x_label"], c["y_label"], c["x_unit"], c["y_unit"] = c["y_label"], c["x_label"], c["y_unit"], c["x_unit"]
        return c
    return {"type": "unknown", "title": ax.get_title() or None, "elements": []}


def _figure_chart(fig):
    axes = fig.get_axes()
    if not axes:
        return None
    try:
        if len(axes) == 1:
            return _axes_chart(axes[0])
        sup = getattr(fig, "_suptitle", None)
        return {"type": "superchart", "title": (sup.get_text() if sup is not None else "") or None,
                "elements": [_axes_chart(ax) for ax in axes]}
    except Exception:  # a figure of a kind not foreseen: it still comes back as its image
        return None


def _frame_data(df):
    try:
        return {str(col): [_plain(v) for v in df[col].tolist()] for col in df.columns}
    except Exception:
        return None


def _as_figure(value):
    mpl = sys.modules.get("matplotlib.figure")
    if mpl is not None and isinstance(value, mpl.Figure):
        return value
    return None


def _figure_bundle(fig):
    data = {"text/plain": repr(fig), "image/png": _figure_png(fig)}
    chart = _figure_chart(fig)
    if chart is not None:
        data["e2b/chart"] = chart
    return data


def _flush_figures():
    """Figures the code made and did not show go out after it, as Jupyter's inline backend does."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    for num in plt.get_fignums():
        fig = plt.figure(num)
        if id(fig) not in _shown:
            _emit(_bundle_result(_figure_bundle(fig), False))
    plt.close("all")


def _error_event(name, value, traceback_text):
    _emit({"type": "error", "name": name, "value": value, "traceback": traceback_text})


# Without IPython: the code runs as a module body; its last expression is the main result, rich through
# IPython's _repr_*_ protocol, and display() puts out the others.
def _mime_bundle(value):
    fig = _as_figure(value)
    if fig is not None:
        return _figure_bundle(fig)
    data = {"text/plain": repr(value)}
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(value, pd.DataFrame):
        frame = _frame_data(value)
        if frame is not None:
            data["e2b/data"] = frame
    for field, mime in (("html", "text/html"), ("markdown", "text/markdown"), ("svg", "image/svg+xml"),
                        ("latex", "text/latex"), ("json", "application/json"),
                        ("javascript", "application/javascript"), ("png", "image/png"), ("jpeg", "image/jpeg")):
        fn = getattr(value, "_repr_%s_" % field, None)
        if not callable(fn):
            continue
        try:
            out = fn()
        except Exception:
            continue
        if field in ("png", "jpeg") and not isinstance(out, bytes):
            continue
        if out is not None:
            data[mime] = out
    return data


def _display(*objs, **kwargs):
    for obj in objs:
        _emit(_bundle_result(_mime_bundle(obj), False))


def _plain_runner():
    import builtins
    builtins.display = _display
    ns = {"__name__": "__main__", "__builtins__": builtins}

    def run(code):
        try:
            tree = ast.parse(code, "<cell>", "exec")
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)
            exec(compile(tree, "<cell>", "exec"), ns)
            value = eval(compile(last, "<cell>", "eval"), ns) if last is not None else None
            if value is not None:
                _emit(_bundle_result(_mime_bundle(value), True))
            _flush_figures()
        except BaseException as e:  # the user's code may raise anything, KeyboardInterrupt included
            tb = e.__traceback__
            while tb is not None and tb.tb_frame.f_code.co_filename != "<cell>":
                tb = tb.tb_next  # the worker's own frames are noise to the user
            _error_event(type(e).__name__, str(e), "".join(traceback.format_exception(type(e), e, tb)))

    return run


# With IPython (the code-interpreter template has it): the code runs as in E2B's Jupyter kernel. Magics and
# shell escapes (!pip install, %pip, %%bash, %timeit), display() and every rich format, the last expression as
# the main result, Out and _, IPython's tracebacks (without colour: they are read, often by a model).
def _ipython_runner():
    try:
        from IPython.core.displayhook import DisplayHook
        from IPython.core.displaypub import DisplayPublisher
        from IPython.core.interactiveshell import InteractiveShell
        from traitlets import Type
        from traitlets.config import Config
    except Exception:
        return None

    class Hook(DisplayHook):  # the last expression's value
        def start_displayhook(self):
            pass

        def write_output_prompt(self):
            pass

        def write_format_data(self, format_dict, md_dict=None):
            _emit(_bundle_result(format_dict, True))

        def finish_displayhook(self):
            pass

    class Publisher(DisplayPublisher):  # display()
        def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):
            _emit(_bundle_result(data, False))

        def clear_output(self, wait=False):
            pass

    class Shell(InteractiveShell):
        displayhook_class = Type(Hook)
        display_pub_class = Type(Publisher)

        def _showtraceback(self, etype, evalue, stb):
            _error_event(etype.__name__, str(evalue), "\n".join(stb))

    config = Config()
    config.HistoryManager.enabled = False  # no sqlite file in the user's home, no thread writing it
    config.InteractiveShell.colors = "NoColor"
    shell = Shell.instance(config=config)
    formatters = shell.display_formatter.formatters
    formatters["image/png"].for_type_by_name("matplotlib.figure", "Figure", _figure_png)
    try:  # E2B's own formats: a figure's chart, a DataFrame's columns
        from IPython.core.formatters import BaseFormatter
        from traitlets import ObjectName, Unicode

        class DataFormatter(BaseFormatter):
            format_type = Unicode("e2b/data")
            print_method = ObjectName("_repr_e2b_data_")
            _return_type = (dict,)

        class ChartFormatter(BaseFormatter):
            format_type = Unicode("e2b/chart")
            print_method = ObjectName("_repr_e2b_chart_")
            _return_type = (dict,)

        formatters["e2b/data"] = DataFormatter(parent=shell.display_formatter)
        formatters["e2b/data"].for_type_by_name("pandas.core.frame", "DataFrame", _frame_data)
        formatters["e2b/chart"] = ChartFormatter(parent=shell.display_formatter)
        formatters["e2b/chart"].for_type_by_name("matplotlib.figure", "Figure", _figure_chart)
    except Exception:
        pass

    def run(code):
        try:
            shell.run_cell(code, store_history=True)
            _flush_figures()
        except BaseException as e:  # an interrupt landing outside the cell's own run (IPython reports those)
            _error_event(type(e).__name__, str(e), "")

    return run


def main():
    os.environ.setdefault("MPLBACKEND", "Agg")
    import builtins
    builtins.input = _no_input
    run = _ipython_runner() or _plain_runner()
    real_out, real_err = sys.stdout, sys.stderr
    for req, (sys.stdout, sys.stderr) in _executions():
        env = req.get("env_vars") or {}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update({str(k): str(v) for k, v in env.items()})
        _shown.clear()
        try:
            run(req.get("code", ""))
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
