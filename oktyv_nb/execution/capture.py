"""What each call printed: per-call capture of stdout, stderr and logging (SPEC §18).

A run with capture on hands the backend not the tool but :class:`Captured` around it. The
wrapper runs wherever the call runs (a worker thread, a worker process, a Dask worker), so
capture works on every backend without a backend knowing of it; the engine's loop workers,
which await async tools themselves, make their own :class:`Capture` current around each call:

* it sets the context variable :data:`current` to a fresh :class:`Capture` for the call;
* ``sys.stdout`` and ``sys.stderr`` are :class:`Tee` objects (installed once per process,
  on first use) that write into the current context's capture when there is one, and to the
  stream they replaced otherwise; a logging handler on the root logger writes each record
  that reaches it as ``LEVEL:logger:message`` into the capture's stderr (the user's own
  handlers still get the record);
* the output travels back with the outcome: a return value becomes :class:`WithOutput`, a
  raised exception carries it as ``__oktyv_output__`` (an attribute, so it survives
  pickling). :func:`take_output` unpacks both on the engine's side.

Threads and asyncio tasks each have their own context, so concurrent calls never mix their
output, and a call the engine abandoned (a timeout) keeps writing into its own capture,
never into whatever notebook cell runs next. Buffers are made on the first write; each
stream keeps at most :data:`LIMIT` characters, its tail, after a line saying how much was
cut.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
from contextvars import ContextVar
from typing import Any

from oktyv_nb.execution.backends.wire import call_maybe_async

__all__ = [
    "LIMIT", "Capture", "Captured", "Tee", "WithOutput", "current", "install",
    "join_output", "take_output",
]

LIMIT = 1_000_000  # characters kept per stream of a task

current: ContextVar[Capture | None] = ContextVar("oktyv_capture", default=None)


class Capture:
    """The output of one call: ``out``/``err`` lists of text, made on first write."""

    __slots__ = ("err", "err_n", "out", "out_n")

    def __init__(self) -> None:
        self.out: list[str] | None = None
        self.err: list[str] | None = None
        self.out_n = 0
        self.err_n = 0

    def write(self, stream: str, text: str) -> None:
        if not text:
            return
        if stream == "out":
            if self.out is None:
                self.out = []
            self.out.append(text)
            self.out_n += len(text)
            if self.out_n > 2 * LIMIT:
                self.out, self.out_n = _keep_tail(self.out, self.out_n)
        else:
            if self.err is None:
                self.err = []
            self.err.append(text)
            self.err_n += len(text)
            if self.err_n > 2 * LIMIT:
                self.err, self.err_n = _keep_tail(self.err, self.err_n)

    def output(self) -> tuple[str, str] | None:
        """``(stdout, stderr)`` text, each at most :data:`LIMIT` characters; None if the call
        wrote nothing."""
        if self.out is None and self.err is None:
            return None
        return _tail("".join(self.out or ())), _tail("".join(self.err or ()))


def _keep_tail(parts: list[str], n: int) -> tuple[list[str], int]:
    text = "".join(parts)
    cut = len(text) - LIMIT
    # the marker's count is of characters dropped so far; _tail adds the final one
    return [f"\0{cut}\0", text[cut:]], LIMIT


def _tail(text: str) -> str:
    dropped = 0
    if text.startswith("\0"):
        end = text.index("\0", 1)
        dropped = int(text[1:end])
        text = text[end + 1:]
    if len(text) > LIMIT:
        dropped += len(text) - LIMIT
        text = text[-LIMIT:]
    if dropped:
        return f"[... {dropped} characters cut: the last {LIMIT} are kept]\n{text}"
    return text


def join_output(parts: list[str]) -> str:
    """The text of several attempts' output of one stream, at most :data:`LIMIT` characters."""
    return _tail("".join(parts)) if parts else ""


class Tee(io.TextIOBase):
    """``sys.stdout``/``sys.stderr``: writes go to the current call's capture, if any, else
    to the stream this replaced."""

    def __init__(self, stream: str, target: Any) -> None:
        self.stream = stream
        self.target = target

    def write(self, text: str) -> int:
        cap = current.get()
        if cap is not None:
            cap.write(self.stream, text)
            return len(text)
        return self.target.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if current.get() is None:
            self.target.flush()

    def isatty(self) -> bool:
        return bool(getattr(self.target, "isatty", lambda: False)())

    def fileno(self) -> int:
        return self.target.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


class _LogHandler(logging.Handler):
    """Log records emitted during a captured call, into that call's stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        cap = current.get()
        if cap is None:
            return
        try:
            cap.write("err", f"{record.levelname}:{record.name}:{record.getMessage()}\n")
        except Exception:
            self.handleError(record)


_HANDLER = _LogHandler()
_lock = threading.Lock()


_installed = False


def install() -> None:
    """Put the :class:`Tee` streams and the log handler in place (idempotent). The engine
    calls it as a run starts (streams may have been swapped since the last run); a worker
    process installs on its first captured call."""
    global _installed
    _installed = True
    if (type(sys.stdout) is Tee and type(sys.stderr) is Tee
            and _HANDLER in logging.getLogger().handlers):
        return
    with _lock:
        if type(sys.stdout) is not Tee:
            sys.stdout = Tee("out", sys.stdout)
        if type(sys.stderr) is not Tee:
            sys.stderr = Tee("err", sys.stderr)
        root = logging.getLogger()
        if _HANDLER not in root.handlers:
            root.addHandler(_HANDLER)


class WithOutput:
    """A captured call's return value and what it printed."""

    __slots__ = ("output", "value")

    def __init__(self, value: Any, output: tuple[str, str] | None) -> None:
        self.value = value
        self.output = output

    def __reduce__(self) -> tuple[Any, ...]:
        return (WithOutput, (self.value, self.output))


def _attach(exc: BaseException, output: tuple[str, str] | None) -> None:
    if output is not None:
        with contextlib.suppress(Exception):  # an exception type that takes no attributes
            exc.__oktyv_output__ = output  # type: ignore[attr-defined]


class Captured:
    """``fn(**kwargs)`` with its output captured (a sync tool)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __call__(self, **kwargs: Any) -> WithOutput:
        if not _installed:
            install()
        cap = Capture()
        token = current.set(cap)
        try:
            # an async tool on a thread or process backend: its coroutine runs here too
            value = call_maybe_async(self.fn, kwargs)
        except BaseException as exc:
            _attach(exc, cap.output())
            raise
        finally:
            current.reset(token)
        return WithOutput(value, cap.output())

    def __reduce__(self) -> tuple[Any, ...]:
        return (Captured, (self.fn,))

    @property
    def __wrapped__(self) -> Any:  # the tool itself, for names in messages
        return self.fn


def take_output(ok: bool, value: Any) -> tuple[Any, tuple[str, str] | None]:
    """``(value, output)`` of a captured call's outcome (the value unwrapped)."""
    if ok:
        if type(value) is WithOutput:
            return value.value, value.output
        return value, None
    return value, getattr(value, "__oktyv_output__", None)
