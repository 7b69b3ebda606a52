"""Fixtures for the real-browser tests: a Voila server on a temp copy of a notebook, and
Debian's Chromium driven by Playwright (never ``playwright install``).

The kernel is this interpreter's: Voila runs as ``sys.executable -m voila`` with
``JUPYTER_PATH`` pointing first at this environment's kernelspecs (create the ``python3`` one
with ``python -m ipykernel install --sys-prefix --name python3``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
HERE = Path(__file__).parent
SERVER_START_TIMEOUT = 60.0  # seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"voila exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"voila did not open port {port} in {SERVER_START_TIMEOUT} s:\n"
                f"{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def voila_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a Voila server rendering a temp copy of ``form_demo.ipynb``."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    pytest.importorskip("voila")
    pytest.importorskip("playwright")
    root = tmp_path_factory.mktemp("voila")
    shutil.copy(HERE / "form_demo.ipynb", root / "form_demo.ipynb")
    port = _free_port()
    log = root / "voila.log"
    env = dict(os.environ)
    share = str(Path(sys.prefix) / "share" / "jupyter")
    env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [share, env.get("JUPYTER_PATH")]))
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voila", "form_demo.ipynb", "--no-browser",
             f"--port={port}", "--Voila.ip=127.0.0.1"],
            cwd=root, stdout=out, stderr=subprocess.STDOUT, env=env,
        )
        try:
            _wait_for_port(port, proc, log)
            yield f"http://127.0.0.1:{port}/"
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian Chromium, headless, launched by Playwright."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
