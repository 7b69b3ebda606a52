"""Tests of the built-in tools (SPEC §10), run for real: files, processes, HTTP, SQLite."""

import asyncio
import inspect
import json
import pickle
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from oktyv_nb.model.tools import (
    BUILTIN_TOOLS,
    HttpConnectionError,
    HttpStatusError,
    HttpTimeoutError,
    ToolParamError,
    file_copy,
    file_move,
    file_read,
    file_write,
    http_request,
    shell,
    sleep,
    sqlite,
)

# --------------------------------------------------------------------------------------------
# Registry


def test_builtin_tools_mapping() -> None:
    assert set(BUILTIN_TOOLS) == {
        "file_move",
        "file_copy",
        "file_write",
        "file_read",
        "shell",
        "http_request",
        "sqlite",
        "sleep",
    }
    for name, func in BUILTIN_TOOLS.items():
        assert func.__name__ == name
        assert func.__doc__
        hints = inspect.get_annotations(func, eval_str=True)
        assert "return" in hints
        assert set(inspect.signature(func).parameters) <= set(hints)
    assert inspect.iscoroutinefunction(BUILTIN_TOOLS["sleep"])
    sync = [f for n, f in BUILTIN_TOOLS.items() if n != "sleep"]
    assert not any(inspect.iscoroutinefunction(f) for f in sync)


def test_tool_param_error_is_value_error_with_code() -> None:
    err = ToolParamError("x: y must be z, got int 1; pass 'z'")
    assert isinstance(err, ValueError)
    assert err.code == "INVALID_PARAMS"
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err)
    assert again.code == "INVALID_PARAMS"


# --------------------------------------------------------------------------------------------
# Files


def test_file_write_text_and_read(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "note.txt"
    out = file_write(path=str(target), content="héllo\n")
    assert out == {"path": str(target), "bytes": len("héllo\n".encode())}
    assert file_read(path=target) == "héllo\n"


def test_file_write_json_for_non_str(tmp_path: Path) -> None:
    data = {"emails": [{"id": 1, "subject": "hi"}], "ok": True, "none": None}
    out = file_write(path=tmp_path / "out.json", content=data)
    text = (tmp_path / "out.json").read_text()
    assert text == json.dumps(data, indent=2)
    assert out["bytes"] == len(text.encode())
    assert json.loads(file_read(path=tmp_path / "out.json")) == data
    file_write(path=tmp_path / "list.json", content=[1, 2, 3])
    assert json.loads((tmp_path / "list.json").read_text()) == [1, 2, 3]
    file_write(path=tmp_path / "num.json", content=42)
    assert (tmp_path / "num.json").read_text() == "42"


def test_file_write_bytes_and_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "blob.bin"
    assert file_write(path=target, content=b"\x00\x01\x02")["bytes"] == 3
    assert target.read_bytes() == b"\x00\x01\x02"
    file_write(path=target, content="new")
    assert target.read_text() == "new"


def test_file_copy(tmp_path: Path) -> None:
    src = tmp_path / "src.txt"
    src.write_text("copy me")
    dest = tmp_path / "sub" / "dst.txt"
    out = file_copy(source=src, dest=dest)
    assert out == {"source": str(src), "dest": str(dest), "bytes": 7}
    assert src.read_text() == "copy me"
    assert dest.read_text() == "copy me"


def test_file_copy_into_directory(tmp_path: Path) -> None:
    src = tmp_path / "src.txt"
    src.write_text("x")
    folder = tmp_path / "folder"
    folder.mkdir()
    out = file_copy(source=str(src), dest=str(folder))
    assert out["dest"] == str(folder / "src.txt")
    assert (folder / "src.txt").read_text() == "x"


def test_file_move(tmp_path: Path) -> None:
    src = tmp_path / "src.txt"
    src.write_text("move me")
    dest = tmp_path / "new" / "moved.txt"
    out = file_move(source=str(src), dest=str(dest))
    assert out == {"source": str(src), "dest": str(dest), "bytes": 7}
    assert not src.exists()
    assert dest.read_text() == "move me"


def test_file_tools_missing_source_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    for func in (file_copy, file_move):
        with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
            func(source=missing, dest=tmp_path / "x.txt")
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))) as info:
        file_read(path=missing)
    assert "file_read" in str(info.value)


def test_file_tools_validation(tmp_path: Path) -> None:
    with pytest.raises(
        ToolParamError, match=r"^file_write: path must be a non-empty path, got str ''"
    ):
        file_write(path="", content="x")
    with pytest.raises(ToolParamError, match=r"file_write: path must be a path .*got int 3"):
        file_write(path=3, content="x")  # type: ignore[arg-type]
    with pytest.raises(ToolParamError, match=r"file_write: path is a directory"):
        file_write(path=tmp_path, content="x")
    with pytest.raises(ToolParamError, match=r"file_write: content must be a str, bytes or JSON"):
        file_write(path=tmp_path / "x.json", content={"s": {1, 2}})
    assert not (tmp_path / "x.json").exists()
    with pytest.raises(ToolParamError, match=r"file_read: path must be a non-empty path"):
        file_read(path="   ")
    with pytest.raises(ToolParamError, match=r"file_read: path must be a regular file"):
        file_read(path=tmp_path)
    src = tmp_path / "s.txt"
    src.write_text("s")
    with pytest.raises(ToolParamError, match=r"file_copy: dest must be a non-empty path"):
        file_copy(source=src, dest="")
    with pytest.raises(ToolParamError, match=r"file_move: source must be a path"):
        file_move(source=None, dest=src)  # type: ignore[arg-type]
    with pytest.raises(ToolParamError, match=r"file_copy: dest must differ from source"):
        file_copy(source=src, dest=src)
    assert src.read_text() == "s"


def test_file_errors_have_code() -> None:
    with pytest.raises(ToolParamError) as info:
        file_read(path="")
    assert info.value.code == "INVALID_PARAMS"
    assert "; pass " in str(info.value)


# --------------------------------------------------------------------------------------------
# Shell


def test_shell_echo() -> None:
    out = shell(argv=["echo", "hello", "world"])
    assert out == {"returncode": 0, "stdout": "hello world\n", "stderr": ""}


def test_shell_nonzero_exit_is_not_an_exception() -> None:
    out = shell(argv=["sh", "-c", "echo oops >&2; exit 3"])
    assert out["returncode"] == 3
    assert out["stderr"] == "oops\n"
    assert out["stdout"] == ""


def test_shell_cwd(tmp_path: Path) -> None:
    (tmp_path / "marker.txt").write_text("m")
    out = shell(argv=("ls",), cwd=tmp_path)
    assert "marker.txt" in out["stdout"].split()
    out = shell(argv=[sys.executable, "-c", "import os; print(os.getcwd())"], cwd=str(tmp_path))
    assert Path(out["stdout"].strip()).resolve() == tmp_path.resolve()


def test_shell_never_uses_a_shell(tmp_path: Path) -> None:
    out = shell(argv=["echo", "$HOME", "; ls", "|", "cat"])
    assert out["stdout"] == "$HOME ; ls | cat\n"


def test_shell_timeout_kills() -> None:
    start = time.perf_counter()
    with pytest.raises(TimeoutError, match=r"did not finish within 0.2 s"):
        shell(argv=["sleep", "5"], timeout=0.2)
    assert time.perf_counter() - start < 4


def test_shell_program_not_found() -> None:
    with pytest.raises(FileNotFoundError, match="no-such-program-xyz"):
        shell(argv=["no-such-program-xyz"])


def test_shell_rejects_string_argv() -> None:
    msg = "shell: argv must be a list of strings, got str 'ls -l'; pass ['ls', '-l']"
    with pytest.raises(ToolParamError, match=re.escape(msg)) as info:
        shell(argv="ls -l")  # type: ignore[arg-type]
    assert "never run through a shell" in str(info.value)
    assert info.value.code == "INVALID_PARAMS"


def test_shell_validation(tmp_path: Path) -> None:
    with pytest.raises(ToolParamError, match=r"shell: argv must not be empty, got list \[\]"):
        shell(argv=[])
    with pytest.raises(ToolParamError, match=r"shell: argv\[1\] must be a string, got int 1"):
        shell(argv=["sleep", 1])  # type: ignore[list-item]
    with pytest.raises(ToolParamError, match=r"shell: argv must be a list of strings, got dict"):
        shell(argv={"a": 1})  # type: ignore[arg-type]
    with pytest.raises(ToolParamError, match=r"shell: cwd must be an existing directory"):
        shell(argv=["ls"], cwd=tmp_path / "missing")
    with pytest.raises(ToolParamError, match=r"shell: timeout must be > 0 seconds, got int -1"):
        shell(argv=["ls"], timeout=-1)
    with pytest.raises(ToolParamError, match=r"shell: timeout must be a number of seconds"):
        shell(argv=["ls"], timeout="5")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# HTTP against a real local server


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Test", "yes")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/json":
            body = json.dumps({"hello": "world", "n": 1}).encode()
            self._send(200, body, "application/json")
        elif self.path == "/text":
            self._send(200, "plain text é".encode(), "text/plain; charset=utf-8")
        elif self.path == "/array-as-text":
            self._send(200, b"[1, 2, 3]", "text/plain")
        elif self.path == "/headers":
            body = json.dumps({"x-token": self.headers.get("X-Token")}).encode()
            self._send(200, body, "application/json")
        elif self.path == "/slow":
            time.sleep(1.0)
            self._send(200, b"late", "text/plain")
        elif self.path == "/boom":
            self._send(500, b"internal failure", "text/plain")
        else:
            self._send(404, b"no such thing", "text/plain")

    do_HEAD = do_GET

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        reply = {
            "method": self.command,
            "path": self.path,
            "content_type": self.headers.get("Content-Type"),
            "received": json.loads(raw) if raw else None,
        }
        self._send(201, json.dumps(reply).encode(), "application/json")

    do_PUT = do_POST
    do_DELETE = do_POST


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # The client of /slow gives up before the reply: a broken pipe is expected there.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@pytest.fixture
def server() -> Iterator[str]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        host, port = httpd.server_address[:2]
        yield f"http://{host}:{port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_http_get_json(server: str) -> None:
    out = http_request(url=f"{server}/json")
    assert out["status"] == 200
    assert out["json"] == {"hello": "world", "n": 1}
    assert "text" not in out
    assert out["headers"]["X-Test"] == "yes"
    assert out["headers"]["Content-Type"] == "application/json"


def test_http_post_json_echo(server: str) -> None:
    payload = {"a": [1, 2], "b": "ü"}
    out = http_request(url=f"{server}/echo", method="post", json=payload)
    assert out["status"] == 201
    assert out["json"] == {
        "method": "POST",
        "path": "/echo",
        "content_type": "application/json",
        "received": payload,
    }


def test_http_put_and_delete(server: str) -> None:
    assert http_request(url=f"{server}/x", method="PUT", json=[1])["json"]["method"] == "PUT"
    assert http_request(url=f"{server}/x", method="DELETE")["json"]["received"] is None


def test_http_headers_sent(server: str) -> None:
    out = http_request(url=f"{server}/headers", headers={"X-Token": "t-123"})
    assert out["json"] == {"x-token": "t-123"}


def test_http_text_response(server: str) -> None:
    out = http_request(url=f"{server}/text")
    assert out["status"] == 200
    assert out["text"] == "plain text é"
    assert "json" not in out


def test_http_json_body_without_json_content_type(server: str) -> None:
    assert http_request(url=f"{server}/array-as-text")["json"] == [1, 2, 3]


def test_http_head(server: str) -> None:
    out = http_request(url=f"{server}/json", method="HEAD")
    assert out["status"] == 200
    assert out["text"] == ""


def test_http_404_raises_status_error(server: str) -> None:
    with pytest.raises(HttpStatusError) as info:
        http_request(url=f"{server}/missing")
    err = info.value
    assert err.code == "HTTP_404"
    assert err.status == 404
    assert err.body == "no such thing"
    assert "404" in str(err)
    assert "no such thing" in str(err)
    assert f"{server}/missing" in str(err)
    again = pickle.loads(pickle.dumps(err))
    assert (again.code, again.status, str(again)) == (err.code, err.status, str(err))


def test_http_500_raises_status_error(server: str) -> None:
    with pytest.raises(HttpStatusError, match="internal failure") as info:
        http_request(url=f"{server}/boom", method="GET")
    assert info.value.code == "HTTP_500"


def test_http_timeout(server: str) -> None:
    with pytest.raises(HttpTimeoutError, match=r"timed out after 0.2 s") as info:
        http_request(url=f"{server}/slow", timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    assert info.value.code == "HTTP_TIMEOUT"


def test_http_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    with pytest.raises(HttpConnectionError, match=re.escape(url)) as info:
        http_request(url=url, timeout=5)
    assert isinstance(info.value, ConnectionError)
    assert info.value.code == "HTTP_CONNECTION_ERROR"


def test_http_validation() -> None:
    with pytest.raises(ToolParamError, match=r"http_request: url must be an absolute http://"):
        http_request(url="file:///etc/passwd")
    with pytest.raises(ToolParamError, match=r"http_request: url must be an absolute http://"):
        http_request(url="example.org/api")
    with pytest.raises(ToolParamError, match=r"http_request: url must be a non-empty string"):
        http_request(url="")
    with pytest.raises(ToolParamError, match=r"http_request: url must be a string, got int 5"):
        http_request(url=5)  # type: ignore[arg-type]
    with pytest.raises(ToolParamError, match=r"http_request: method must be one of .*'FETCH'"):
        http_request(url="http://127.0.0.1:1/", method="FETCH")
    with pytest.raises(ToolParamError, match=r"http_request: headers must be a dict"):
        http_request(url="http://127.0.0.1:1/", headers=[("a", "b")])  # type: ignore[arg-type]
    with pytest.raises(ToolParamError, match=r"http_request: headers must map str to str"):
        http_request(url="http://127.0.0.1:1/", headers={"X-N": 1})  # type: ignore[dict-item]
    with pytest.raises(ToolParamError, match=r"http_request: timeout must be > 0 seconds"):
        http_request(url="http://127.0.0.1:1/", timeout=0)
    with pytest.raises(ToolParamError, match=r"http_request: json must be JSON-serialisable"):
        http_request(url="http://127.0.0.1:1/", method="POST", json={"s": {1}})


def test_http_messages_mask_passwords() -> None:
    with pytest.raises(ToolParamError) as info:
        http_request(url="ftp://user:s3cret@example.org/x")
    assert "s3cret" not in str(info.value)
    assert "user:***@example.org" in str(info.value)


# --------------------------------------------------------------------------------------------
# SQLite


def test_sqlite_create_insert_select(tmp_path: Path) -> None:
    db = tmp_path / "data.db"
    created = sqlite(database=db, sql="CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, n REAL)")
    assert set(created) == {"rowcount", "lastrowid"}
    first = sqlite(database=str(db), sql="INSERT INTO t (name, n) VALUES (?, ?)", params=["a", 1.5])
    assert first == {"rowcount": 1, "lastrowid": 1}
    second = sqlite(
        database=db, sql="INSERT INTO t (name, n) VALUES (:name, :n)", params={"name": "b", "n": 2}
    )
    assert second == {"rowcount": 1, "lastrowid": 2}
    rows = sqlite(database=db, sql="SELECT id, name, n FROM t ORDER BY id")
    assert rows == [{"id": 1, "name": "a", "n": 1.5}, {"id": 2, "name": "b", "n": 2.0}]
    one = sqlite(database=db, sql="SELECT name FROM t WHERE id = ?", params=(2,))
    assert one == [{"name": "b"}]
    assert sqlite(database=db, sql="SELECT * FROM t WHERE id = ?", params=[99]) == []
    updated = sqlite(database=db, sql="UPDATE t SET n = n + 1")
    assert updated["rowcount"] == 2


def test_sqlite_commits_and_returning(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "r.db"
    sqlite(database=db, sql="CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    rows = sqlite(database=db, sql="INSERT INTO t (v) VALUES (?) RETURNING id, v", params=["x"])
    assert rows == [{"id": 1, "v": "x"}]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT v FROM t").fetchall() == [("x",)]
    conn.close()


def test_sqlite_memory_database() -> None:
    assert sqlite(database=":memory:", sql="SELECT 1 AS one, 'a' AS s") == [{"one": 1, "s": "a"}]


def test_sqlite_sql_error_propagates(tmp_path: Path) -> None:
    import sqlite3

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        sqlite(database=tmp_path / "e.db", sql="SELECT * FROM missing")


def test_sqlite_validation(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    with pytest.raises(ToolParamError, match=r"sqlite: sql must be a non-empty string, got str ''"):
        sqlite(database=db, sql="")
    with pytest.raises(ToolParamError, match=r"sqlite: sql must be a string, got int 1"):
        sqlite(database=db, sql=1)  # type: ignore[arg-type]
    with pytest.raises(ToolParamError, match=r"sqlite: database must be a non-empty path"):
        sqlite(database="", sql="SELECT 1")
    with pytest.raises(
        ToolParamError, match=re.escape("sqlite: params must be a list/tuple (for ?) or a dict")
    ) as info:
        sqlite(database=db, sql="SELECT ?", params=5)  # type: ignore[arg-type]
    assert str(info.value).endswith("pass [5]")
    with pytest.raises(ToolParamError, match=r"sqlite: params must be a list/tuple"):
        sqlite(database=db, sql="SELECT ?", params="abc")  # type: ignore[arg-type]
    with pytest.raises(ToolParamError, match=r"sqlite: database is a directory"):
        sqlite(database=tmp_path, sql="SELECT 1")
    missing_dir = tmp_path / "no" / "such"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing_dir))):
        sqlite(database=missing_dir / "x.db", sql="SELECT 1")


# --------------------------------------------------------------------------------------------
# Sleep


def test_sleep_returns_value_after_delay() -> None:
    start = time.perf_counter()
    out = asyncio.run(sleep(seconds=0.2, value={"done": True}))
    elapsed = time.perf_counter() - start
    assert out == {"done": True}
    assert elapsed >= 0.2


def test_sleep_default_value_and_zero() -> None:
    assert asyncio.run(sleep(seconds=0)) is None
    assert asyncio.run(sleep(seconds=0.01, value=7)) == 7


def test_sleeps_run_concurrently() -> None:
    async def main() -> list[int]:
        return await asyncio.gather(*(sleep(seconds=0.2, value=i) for i in range(5)))

    start = time.perf_counter()
    assert asyncio.run(main()) == [0, 1, 2, 3, 4]
    assert time.perf_counter() - start < 0.9


@pytest.mark.parametrize(
    ("seconds", "pattern"),
    [
        (-1, r"sleep: seconds must be >= 0 seconds, got int -1; pass e.g. 1.5"),
        ("1", r"sleep: seconds must be a number of seconds, got str '1'"),
        (None, r"sleep: seconds must be a number of seconds, got NoneType None"),
        (True, r"sleep: seconds must be a number of seconds, got bool True"),
        (float("nan"), r"sleep: seconds must be a finite number of seconds"),
        (float("inf"), r"sleep: seconds must be a finite number of seconds"),
    ],
)
def test_sleep_validation(seconds: object, pattern: str) -> None:
    with pytest.raises(ToolParamError, match=pattern) as info:
        asyncio.run(sleep(seconds=seconds))  # type: ignore[arg-type]
    assert info.value.code == "INVALID_PARAMS"
