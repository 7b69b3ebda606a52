"""Built-in tools (SPEC §10).

Plain Python functions, called by the engine with their resolved params as **keyword
arguments**. The synchronous tools are run by the engine in a worker thread; :func:`sleep` is a
coroutine function and runs on the event loop. Every tool validates its params before doing
anything and raises :class:`ToolParamError` (``code = "INVALID_PARAMS"``) with a message that
names the tool, the parameter, what was given and how to fix it.

Units: times are in **seconds** (floats), like :mod:`time` and :mod:`asyncio`; sizes are in
**bytes**. Return values are JSON-friendly dicts, lists and strings so that later tasks can
reference them with ``${task.result...}``.

Size: one module holds the built-in tool set (about 660 lines): each tool is one function
with its docstring and its own param checks, and the set reads as SPEC §10's list.
"""

import asyncio
import base64
import contextlib
import json as _json
import math
import os
import shlex
import shutil
import sqlite3
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from email.message import Message
from pathlib import Path
from typing import Any, TypeAlias

__all__ = [
    "BUILTIN_TOOLS",
    "HttpConnectionError",
    "HttpStatusError",
    "HttpTimeoutError",
    "StrPath",
    "ToolParamError",
    "file_copy",
    "file_move",
    "file_read",
    "file_write",
    "http_request",
    "shell",
    "sleep",
    "sqlite",
]

StrPath: TypeAlias = str | os.PathLike[str]
"""A filesystem path: a ``str`` or an ``os.PathLike`` such as :class:`pathlib.Path`."""

_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_MAX_REPR = 80
_MAX_BODY_IN_MESSAGE = 1000


# --------------------------------------------------------------------------------------------
# Errors


class ToolParamError(ValueError):
    """A built-in tool was called with invalid params (``code = "INVALID_PARAMS"``).

    The message names the tool, the parameter, the value given and the fix.
    """

    code = "INVALID_PARAMS"


class HttpStatusError(Exception):
    """:func:`http_request` got an HTTP error status (4xx/5xx).

    ``code`` is ``"HTTP_<status>"`` (e.g. ``"HTTP_404"``); ``status``, ``url``, ``body`` (the
    response text) and ``headers`` are kept as attributes. The message carries the status and
    the (truncated) body text. Being an ordinary tool error, it is retried by a retry policy.
    """

    def __init__(
        self,
        status: int,
        url: str,
        body: str = "",
        headers: Mapping[str, str] | None = None,
        method: str = "GET",
        reason: str = "",
    ) -> None:
        self.status = status
        self.url = url
        self.body = body
        self.headers = dict(headers or {})
        self.method = method
        self.reason = reason
        self.code = f"HTTP_{status}"
        shown = body if len(body) <= _MAX_BODY_IN_MESSAGE else body[:_MAX_BODY_IN_MESSAGE] + "..."
        head = f"http_request: {method} {_redact_url(url)} returned HTTP {status}"
        if reason:
            head += f" {reason}"
        super().__init__(f"{head}: {shown}" if shown else head)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the exception picklable (process and Dask backends send it back to the engine).
        return (
            type(self),
            (self.status, self.url, self.body, self.headers, self.method, self.reason),
        )


class HttpConnectionError(ConnectionError):
    """:func:`http_request` could not get a response (DNS, refused, reset, TLS, ...).

    ``code = "HTTP_CONNECTION_ERROR"``; the original error is chained as ``__cause__``.
    """

    code = "HTTP_CONNECTION_ERROR"


class HttpTimeoutError(HttpConnectionError, TimeoutError):
    """:func:`http_request` timed out connecting or reading (``code = "HTTP_TIMEOUT"``)."""

    code = "HTTP_TIMEOUT"


# --------------------------------------------------------------------------------------------
# Validation helpers


def _show(value: Any) -> str:
    """A short ``<type> <repr>`` description of a given value, for error messages."""
    text = repr(value)
    if len(text) > _MAX_REPR:
        text = text[: _MAX_REPR - 3] + "..."
    return f"{type(value).__name__} {text}"


def _fail(tool: str, param: str, problem: str, value: Any, fix: str) -> ToolParamError:
    return ToolParamError(f"{tool}: {param} {problem}, got {_show(value)}; {fix}")


def _check_path(tool: str, param: str, value: Any) -> Path:
    if isinstance(value, bytes) or not isinstance(value, str | os.PathLike):
        raise _fail(
            tool, param, "must be a path (str or pathlib.Path)", value, "pass e.g. 'data/out.txt'"
        )
    text = os.fspath(value)
    if not isinstance(text, str) or not text.strip():
        raise _fail(tool, param, "must be a non-empty path", value, "pass e.g. 'data/out.txt'")
    if "\x00" in text:
        raise _fail(tool, param, "must not contain NUL characters", value, "remove them")
    return Path(text)


def _check_existing_file(tool: str, param: str, value: Any) -> Path:
    path = _check_path(tool, param, value)
    if not path.exists():
        raise FileNotFoundError(f"{tool}: {param} {str(path)!r} does not exist")
    if not path.is_file():
        raise _fail(
            tool, param, "must be a regular file (not a directory)", value, "pass a file path"
        )
    return path


def _check_seconds(
    tool: str, param: str, value: Any, *, optional: bool, allow_zero: bool
) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        fix = "pass a number of seconds, e.g. 1.5" + (" or None" if optional else "")
        raise _fail(tool, param, "must be a number of seconds", value, fix)
    seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds):
        raise _fail(tool, param, "must be a finite number of seconds", value, "pass e.g. 1.5")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise _fail(tool, param, f"must be {bound} seconds", value, "pass e.g. 1.5")
    return seconds


def _check_str(tool: str, param: str, value: Any, example: str) -> str:
    if not isinstance(value, str):
        raise _fail(tool, param, "must be a string", value, f"pass e.g. {example!r}")
    if not value.strip():
        raise _fail(tool, param, "must be a non-empty string", value, f"pass e.g. {example!r}")
    return value


def _redact_url(url: str) -> str:
    """The URL with any ``user:password@`` part masked, for messages."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# --------------------------------------------------------------------------------------------
# Files


def _transfer(tool: str, source: Any, dest: Any, op: Callable[[str, str], Any]) -> dict[str, Any]:
    src = _check_existing_file(tool, "source", source)
    dst = _check_path(tool, "dest", dest)
    if dst.is_dir():
        dst = dst / src.name
    if dst.exists() and dst.samefile(src):
        raise _fail(tool, "dest", "must differ from source", dest, "pass another destination")
    dst.parent.mkdir(parents=True, exist_ok=True)
    size = src.stat().st_size
    op(str(src), str(dst))
    return {"source": str(src), "dest": str(dst), "bytes": size}


def file_copy(source: StrPath, dest: StrPath) -> dict[str, Any]:
    """Copy the file ``source`` to ``dest`` (contents and metadata, like ``shutil.copy2``).

    ``dest`` may be an existing directory (the file keeps its name there); missing parent
    directories of ``dest`` are created; an existing destination file is overwritten.

    Returns ``{"source": str, "dest": str, "bytes": int}`` where ``dest`` is the final file
    path and ``bytes`` the size copied, in bytes. Raises :class:`FileNotFoundError` naming the
    path when ``source`` does not exist.
    """
    return _transfer("file_copy", source, dest, shutil.copy2)


def file_move(source: StrPath, dest: StrPath) -> dict[str, Any]:
    """Move (rename) the file ``source`` to ``dest`` (``shutil.move``, works across devices).

    ``dest`` may be an existing directory (the file keeps its name there); missing parent
    directories of ``dest`` are created; an existing destination file is replaced.

    Returns ``{"source": str, "dest": str, "bytes": int}`` where ``dest`` is the final file
    path and ``bytes`` the size moved, in bytes. Raises :class:`FileNotFoundError` naming the
    path when ``source`` does not exist.
    """
    return _transfer("file_move", source, dest, shutil.move)


def file_write(path: StrPath, content: Any, encoding: str = "utf-8") -> dict[str, Any]:
    """Write ``content`` to the file ``path`` (replacing it); missing parent dirs are created.

    A ``str`` is written as text (in ``encoding``); ``bytes``/``bytearray`` are written as is;
    anything else (dict, list, number, bool, None) is written as JSON with ``indent=2``.

    Returns ``{"path": str, "bytes": int}``, the size written in bytes.
    """
    tool = "file_write"
    target = _check_path(tool, "path", path)
    _check_str(tool, "encoding", encoding, "utf-8")
    if target.is_dir():
        raise _fail(tool, "path", "is a directory", path, "pass a file path inside it")
    if isinstance(content, str):
        try:
            data = content.encode(encoding)
        except LookupError:
            raise _fail(
                tool, "encoding", "is not a known encoding", encoding, "pass e.g. 'utf-8'"
            ) from None
    elif isinstance(content, bytes | bytearray):
        data = bytes(content)
    else:
        try:
            data = _json.dumps(content, indent=2, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise _fail(
                tool,
                "content",
                f"must be a str, bytes or JSON-serialisable value ({exc})",
                content,
                "convert it to a str or to dicts/lists of plain values first",
            ) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return {"path": str(target), "bytes": len(data)}


def file_read(path: StrPath, encoding: str = "utf-8") -> str:
    """Read the file ``path`` and return its text, decoded with ``encoding``.

    Raises :class:`FileNotFoundError` naming the path when it does not exist.
    """
    tool = "file_read"
    _check_str(tool, "encoding", encoding, "utf-8")
    source = _check_existing_file(tool, "path", path)
    try:
        return source.read_text(encoding=encoding)
    except LookupError:
        raise _fail(
            tool, "encoding", "is not a known encoding", encoding, "pass e.g. 'utf-8'"
        ) from None


# --------------------------------------------------------------------------------------------
# Shell


def shell(
    argv: Sequence[str], cwd: StrPath | None = None, timeout: float | None = None
) -> dict[str, Any]:
    """Run a program from an argument list and capture its output. Never uses a shell.

    ``argv`` is a list (or tuple) of strings, e.g. ``["ls", "-l"]``; a single command string
    is rejected (pass ``shlex.split(cmd)``, or ``["sh", "-c", cmd]`` if you really want a
    shell). ``cwd`` is the working directory (default: the current one). ``timeout`` is in
    seconds (default: none); on expiry the process is killed and :class:`TimeoutError` raised.

    Returns ``{"returncode": int, "stdout": str, "stderr": str}``. A non-zero return code is
    **not** an exception: the caller inspects ``returncode``. Raises
    :class:`FileNotFoundError` when the program itself is not found.
    """
    tool = "shell"
    if isinstance(argv, str | bytes):
        try:
            suggestion = repr(shlex.split(argv)) if isinstance(argv, str) else "['prog', 'arg']"
        except ValueError:
            suggestion = "['prog', 'arg']"
        raise _fail(
            tool,
            "argv",
            "must be a list of strings",
            argv,
            f"pass {suggestion} (argv is never run through a shell)",
        )
    if not isinstance(argv, list | tuple):
        raise _fail(tool, "argv", "must be a list of strings", argv, "pass e.g. ['ls', '-l']")
    if not argv:
        raise _fail(tool, "argv", "must not be empty", argv, "pass e.g. ['ls', '-l']")
    args: list[str] = []
    for i, item in enumerate(argv):
        if isinstance(item, os.PathLike):
            item = os.fspath(item)
        if not isinstance(item, str):
            raise _fail(tool, f"argv[{i}]", "must be a string", item, f"pass {str(item)!r} instead")
        args.append(item)
    if not args[0]:
        raise _fail(tool, "argv[0]", "must name a program", args[0], "pass e.g. 'ls'")
    workdir: Path | None = None
    if cwd is not None:
        workdir = _check_path(tool, "cwd", cwd)
        if not workdir.is_dir():
            raise _fail(tool, "cwd", "must be an existing directory", cwd, "create it first")
    limit = _check_seconds(tool, "timeout", timeout, optional=True, allow_zero=False)
    try:
        proc = subprocess.run(
            args, cwd=workdir, timeout=limit, capture_output=True, text=True, check=False
        )
    except FileNotFoundError as exc:
        if workdir is not None and not workdir.is_dir():
            raise
        raise FileNotFoundError(
            exc.errno, f"shell: program {args[0]!r} not found (argv[0]); check PATH", args[0]
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise TimeoutError(
            f"shell: {args!r} did not finish within {limit} s; the process was killed"
        ) from exc
    return {"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}


# --------------------------------------------------------------------------------------------
# HTTP


def _decode(body: bytes, headers: Message) -> str:
    charset = headers.get_content_charset() or "utf-8"
    try:
        return body.decode(charset, errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def _headers_dict(headers: Message) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in headers.items():
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _auth_headers(tool: str, credentials: Mapping[str, Any] | None) -> dict[str, str]:
    if credentials is None:
        return {}
    if not isinstance(credentials, Mapping):
        raise ToolParamError(
            f"{tool}: credentials must be a mapping from the vault, got "
            f"{type(credentials).__name__}; give the task vault='<set>' instead of passing it"
        )
    if "token" in credentials:
        return {"Authorization": f"Bearer {credentials['token']}"}
    if "username" in credentials and "password" in credentials:
        pair = f"{credentials['username']}:{credentials['password']}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
    return {}


# Headers that carry credentials: they go only to the origin they were meant for.
_CREDENTIAL_HEADERS = frozenset(("authorization", "cookie"))


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


class _SameOriginRedirect(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http(s) URLs only, and drops the credential headers (the
    vault's bearer token or basic auth, explicit ``Authorization`` or ``Cookie`` headers)
    when a redirect leaves the origin (scheme, host, port) they were sent to."""

    def redirect_request(  # type: ignore[override]
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme.lower() not in ("http", "https"):
            return None  # the 3xx response is then reported as an HTTP error
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(new.full_url) != _origin(req.full_url):
            for name in [h for h in new.headers if h.lower() in _CREDENTIAL_HEADERS]:
                del new.headers[name]
        return new


_opener = urllib.request.build_opener(_SameOriginRedirect)


def http_request(
    url: str,
    method: str = "GET",
    json: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    credentials: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Send an HTTP(S) request with the standard library (``urllib.request``).

    ``credentials`` is what the engine passes for a task with ``vault=``: a ``token`` becomes
    ``Authorization: Bearer <token>``; ``username`` and ``password`` become HTTP basic auth;
    any other keys are ignored. Explicit ``headers`` win.

    ``url`` must use ``http`` or ``https``. ``method`` is an HTTP method (case-insensitive).
    ``json``, when not ``None``, is sent as a JSON body with ``Content-Type:
    application/json`` (unless ``headers`` sets one). ``headers`` maps names to string values.
    ``timeout`` is in seconds (connect and each read). Redirects to http(s) URLs are followed;
credentials (and ``Authorization``/``Cookie`` headers) are sent only to the original origin
(scheme, host and port): a redirect to another origin goes without them.

    Returns ``{"status": int, "headers": dict, "json": value}`` when the response is JSON (its
    content type mentions ``json``, or its body is a JSON object or array), else
    ``{"status": int, "headers": dict, "text": str}``.

    Raises :class:`HttpStatusError` (``code = "HTTP_<status>"``, message with the status and
    body text) for error statuses, so retry policies apply; :class:`HttpTimeoutError` on a
    timeout and :class:`HttpConnectionError` when no response could be obtained.
    """
    tool = "http_request"
    _check_str(tool, "url", url, "https://example.org/api")
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https") or not urllib.parse.urlsplit(url).netloc:
        raise _fail(
            tool,
            "url",
            "must be an absolute http:// or https:// URL",
            _redact_url(url),
            "pass e.g. 'https://example.org/api'",
        )
    if not isinstance(method, str) or method.upper() not in _HTTP_METHODS:
        raise _fail(
            tool, "method", f"must be one of {sorted(_HTTP_METHODS)}", method, "pass e.g. 'GET'"
        )
    verb = method.upper()
    if headers is None:
        headers = {}
    if not isinstance(headers, Mapping):
        raise _fail(
            tool, "headers", "must be a dict of str to str", headers, "pass e.g. {'Accept': '*/*'}"
        )
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ToolParamError(
                f"{tool}: headers must map str to str, got {type(key).__name__} key "
                f"{key!r} with {type(value).__name__} value; convert values with str()"
            )
    limit = _check_seconds(tool, "timeout", timeout, optional=False, allow_zero=False)
    data: bytes | None = None
    send_headers = {**_auth_headers(tool, credentials), **headers}
    if json is not None:
        try:
            data = _json.dumps(json).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise _fail(
                tool,
                "json",
                f"must be JSON-serialisable ({exc})",
                json,
                "pass dicts/lists of plain values",
            ) from None
        if not any(k.lower() == "content-type" for k in send_headers):
            send_headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=send_headers, method=verb)
    shown_url = _redact_url(url)
    status_error: HttpStatusError | None = None
    try:
        with _opener.open(request, timeout=limit) as response:
            status = response.status
            body = response.read()
            resp_headers = response.headers
    except urllib.error.HTTPError as exc:
        try:
            raw = exc.read()
        except Exception:
            raw = b""
        err_headers: Message = exc.headers if exc.headers is not None else Message()
        status_error = HttpStatusError(
            exc.code,
            url,
            _decode(raw, err_headers),
            _headers_dict(err_headers),
            verb,
            str(exc.reason or ""),
        )
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise HttpTimeoutError(f"{tool}: {verb} {shown_url} timed out after {limit} s") from exc
        raise HttpConnectionError(f"{tool}: {verb} {shown_url} failed: {exc.reason}") from exc
    except TimeoutError as exc:
        raise HttpTimeoutError(f"{tool}: {verb} {shown_url} timed out after {limit} s") from exc
    except OSError as exc:
        raise HttpConnectionError(f"{tool}: {verb} {shown_url} failed: {exc}") from exc
    if status_error is not None:
        # Raised outside the handler, so it carries no __context__: the HTTPError holds the
        # open response, which would make the error unpicklable for process backends.
        raise status_error
    result: dict[str, Any] = {"status": status, "headers": _headers_dict(resp_headers)}
    text = _decode(body, resp_headers)
    content_type = (resp_headers.get_content_type() or "").lower()
    stripped = text.strip()
    if stripped and ("json" in content_type or stripped[0] in "{["):
        try:
            result["json"] = _json.loads(text)
            return result
        except ValueError:
            pass
    result["text"] = text
    return result


# --------------------------------------------------------------------------------------------
# SQLite


def _sql_value(value: Any) -> Any:
    if isinstance(value, dict | list):
        return _json.dumps(value)
    return value


def sqlite(
    database: StrPath,
    sql: str,
    params: Sequence[Any] | Mapping[str, Any] | None = None,
) -> list[dict[str, Any]] | dict[str, Any]:
    """Execute one SQL statement on the SQLite file ``database`` and commit.

    ``params`` binds the statement's placeholders: a list/tuple for ``?`` or a dict for
    ``:name``; a dict or list *value* is bound as JSON text (for SQLite's ``json_each``).
    The file is created if missing (its directory must exist); ``":memory:"`` gives
    a throw-away database.

    Returns the rows as a list of dicts (column name -> value) for statements that produce
    rows (``SELECT``, ``... RETURNING``, some ``PRAGMA``), else
    ``{"rowcount": int, "lastrowid": int | None}``.
    """
    return run_sql(database, sql, params)


def run_sql(
    database: Any,
    sql: Any,
    params: Any = None,
    *,
    configure: Callable[[sqlite3.Connection], None] | None = None,
) -> list[dict[str, Any]] | dict[str, Any]:
    """:func:`sqlite`, with ``configure`` called on the connection before the statement runs
    (the sandbox sets an authorizer there, see :mod:`oktyv_nb.model.sandbox`)."""
    tool = "sqlite"
    if database != ":memory:":
        db_path = _check_path(tool, "database", database)
        if db_path.is_dir():
            raise _fail(tool, "database", "is a directory", database, "pass a file path")
        parent = db_path.parent
        if not parent.is_dir():
            raise FileNotFoundError(
                f"{tool}: directory {str(parent)!r} of database {str(db_path)!r} does not exist"
            )
        target: str = str(db_path)
    else:
        target = ":memory:"
    _check_str(tool, "sql", sql, "SELECT * FROM t WHERE id = ?")
    bound: Sequence[Any] | Mapping[str, Any]
    if params is None:
        bound = ()
    elif isinstance(params, list | tuple | Mapping):
        bound = (
            {k: _sql_value(v) for k, v in params.items()}
            if isinstance(params, Mapping)
            else tuple(_sql_value(v) for v in params)
        )
    else:
        raise _fail(
            tool,
            "params",
            "must be a list/tuple (for ?) or a dict (for :name)",
            params,
            f"pass [{params!r}]" if isinstance(params, str | int | float) else "pass e.g. [1]",
        )
    with contextlib.closing(sqlite3.connect(target)) as conn:
        if configure is not None:
            configure(conn)
        cursor = conn.execute(sql, bound)
        if cursor.description is not None:
            columns = [col[0] for col in cursor.description]
            rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
            conn.commit()
            return rows
        conn.commit()
        return {"rowcount": cursor.rowcount, "lastrowid": cursor.lastrowid}


# --------------------------------------------------------------------------------------------
# Sleep


async def sleep(seconds: float, value: Any = None) -> Any:
    """Wait ``seconds`` (>= 0, in seconds, with :func:`asyncio.sleep`) and return ``value``.

    An ``async`` tool: it runs on the event loop and is cancelled cleanly on timeout.
    """
    delay = _check_seconds("sleep", "seconds", seconds, optional=False, allow_zero=True)
    await asyncio.sleep(delay or 0.0)
    return value


BUILTIN_TOOLS: dict[str, Callable[..., Any]] = {
    "file_move": file_move,
    "file_copy": file_copy,
    "file_write": file_write,
    "file_read": file_read,
    "shell": shell,
    "http_request": http_request,
    "sqlite": sqlite,
    "sleep": sleep,
}
"""The built-in tools by name; always available to requests and DAGs (SPEC §10)."""
