"""Render notebook 05's form in a real browser and save a picture of it.

The form is an ipywidgets model: in nbconvert's HTML, on GitHub and in any static render its
output cell is empty. This script runs the cells of ``notebooks/05_widget_form.ipynb`` up to
and including the one that shows the form (``ok.builder(...)``) in Voila, opens the page in
Debian's headless Chromium (driven by Playwright) and writes a screenshot of the form to
``notebooks/05_widget_form.png``, which notebook 05 shows above the live cell.

Run from the repository root: ``python docs/form_screenshot.py`` (needs voila, playwright and
``/usr/bin/chromium``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "05_widget_form.ipynb"
OUT = ROOT / "notebooks" / "05_widget_form.png"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def form_notebook(dest: Path) -> None:
    """The code cells of notebook 05 up to the one that displays the form."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cells.append(nbformat.v4.new_code_cell(cell.source))
        if "ok.builder(" in cell.source:
            break
    else:
        raise SystemExit("no cell calling ok.builder( in notebook 05")
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata=nb.metadata), dest)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        form_notebook(Path(tmp) / "form.ipynb")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = dict(os.environ)
        share = str(Path(sys.prefix) / "share" / "jupyter")
        env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [share, env.get("JUPYTER_PATH")]))
        proc = subprocess.Popen(
            [sys.executable, "-m", "voila", "form.ipynb", "--no-browser", f"--port={port}",
             "--Voila.ip=127.0.0.1"],
            cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
        try:
            deadline = time.monotonic() + 60
            while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("voila did not start")
                time.sleep(0.1)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                            args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1100})
                page.goto(f"http://127.0.0.1:{port}/", timeout=60_000)
                form = page.locator(".oktyv-builder")
                form.wait_for(timeout=90_000)
                page.locator(".oktyv-tool select").wait_for(timeout=30_000)
                page.wait_for_timeout(1500)  # let the graph preview's SVG settle
                form.screenshot(path=str(OUT))
                browser.close()
        finally:
            proc.terminate()
            proc.wait(15)
    print("wrote", OUT.relative_to(ROOT))


if __name__ == "__main__":
    main()
