"""The main job: a real DAG run end to end (``python -m oktyv_nb.demo --out out``).

A small JSON "API" is served on localhost (a real HTTP server in a thread); the DAG fetches
three endpoints in parallel with the built-in ``http_request`` tool, merges them, maps a task
over the users it found (one child a user), writes a
JSON report, loads it into SQLite, queries it and counts bytes with ``shell`` — then prints
the DataFrame and statistics and writes the graph (SVG, PNG) and the timeline (PNG).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["DATA", "build_demo_dag", "demo_api", "main"]

DATA: dict[str, list[dict[str, Any]]] = {
    "users": [
        {"id": 1, "name": "Ada", "city": "London"},
        {"id": 2, "name": "Grace", "city": "New York"},
        {"id": 3, "name": "Linus", "city": "Helsinki"},
    ],
    "orders": [
        {"id": 10, "user": 1, "product": 100, "qty": 2},
        {"id": 11, "user": 2, "product": 101, "qty": 1},
        {"id": 12, "user": 1, "product": 102, "qty": 5},
        {"id": 13, "user": 3, "product": 100, "qty": 1},
    ],
    "products": [
        {"id": 100, "title": "keyboard", "price": 49.5},
        {"id": 101, "title": "monitor", "price": 199.0},
        {"id": 102, "title": "cable", "price": 4.25},
    ],
}


class _Handler(BaseHTTPRequestHandler):
    """``GET /api/<name>?delay=<seconds>`` returns ``DATA[name]`` as JSON after the delay."""

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        name = parts.path.removeprefix("/api/")
        delay = float(parse_qs(parts.query).get("delay", ["0"])[0])
        time.sleep(min(delay, 5.0))
        if name not in DATA:
            body, status = json.dumps({"error": f"no such resource {name!r}"}).encode(), 404
        else:
            body, status = json.dumps(DATA[name]).encode(), 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@contextmanager
def demo_api() -> Iterator[str]:
    """Serve the demo JSON API on 127.0.0.1 (a free port); yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="demo-api", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def merge(users: dict[str, Any], orders: dict[str, Any], products: dict[str, Any]) -> list[dict]:
    """Join orders with their user and product (responses of ``http_request``)."""
    by_user = {u["id"]: u for u in users["json"]}
    by_product = {p["id"]: p for p in products["json"]}
    rows = []
    for o in orders["json"]:
        u, p = by_user[o["user"]], by_product[o["product"]]
        rows.append({"order": o["id"], "name": u["name"], "city": u["city"],
                     "product": p["title"], "total": round(o["qty"] * p["price"], 2)})
    return rows


def spent_by(user: dict[str, Any], orders: dict[str, Any], products: dict[str, Any]
             ) -> dict[str, Any]:
    """What one user spent (a mapped task's child: one call per user)."""
    price = {p["id"]: p["price"] for p in products["json"]}
    mine = [o for o in orders["json"] if o["user"] == user["id"]]
    return {"name": user["name"], "orders": len(mine),
            "spent": round(sum(o["qty"] * price[o["product"]] for o in mine), 2)}


def build_demo_dag(base_url: str, workdir: Path, delay: float = 0.2) -> Any:
    """The demo DAG: three parallel fetches, a merge and a map over the users found at run
    time, then files, SQLite and a shell call."""
    import oktyv_nb as ok

    db = str(workdir / "orders.db")
    report = str(workdir / "report.json")
    return (
        ok.DAG("orders-report", max_concurrent=4)
        .task("users", "http_request", url=f"{base_url}/users?delay={delay}", retries=2)
        .task("orders", "http_request", url=f"{base_url}/orders?delay={delay * 1.5}", retries=2)
        .task("products", "http_request", url=f"{base_url}/products?delay={delay / 2}", retries=2)
        .task("merge", merge, users="${users.result}", orders="${orders.result}",
              products="${products.result}")
        .map("per_user", spent_by, over="${users.result.json}", param="user",
             orders="${orders.result}", products="${products.result}", max_concurrent=2)
        .task("write_report", "file_write", path=report, content="${merge.result}")
        .task("create_table", "sqlite", database=db,
              sql="CREATE TABLE IF NOT EXISTS sales (ord INT, name TEXT, city TEXT, "
                  "product TEXT, total REAL)")
        .task("load", "sqlite", database=db, after=["create_table"],
              sql="INSERT INTO sales SELECT j.value->>'order', j.value->>'name', "
                  "j.value->>'city', j.value->>'product', j.value->>'total' "
                  "FROM json_each(?) AS j",
              params=["${merge.result}"])
        .task("top_customers", "sqlite", database=db, after=["load"],
              sql="SELECT name, ROUND(SUM(total), 2) AS spent FROM sales "
                  "GROUP BY name ORDER BY spent DESC")
        .task("report_size", "shell", argv=["wc", "-c", report], after=["write_report"])
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out", help="folder for the pictures and files")
    parser.add_argument("--delay", type=float, default=0.2, help="API latency in seconds")
    args = parser.parse_args(argv)
    import pandas as pd

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with demo_api() as url:
        dag = build_demo_dag(url, out.resolve(), args.delay)
        print(dag)
        for k, level in enumerate(dag.levels):
            print(f"  level {k}: {', '.join(level)}")
        dag.save_graph(out / "dag.svg")
        run = dag.run(live=False)
    with pd.option_context("display.width", 160, "display.max_columns", 12,
                           "display.max_colwidth", 28):
        print()
        print(run.df[["tool", "level", "status", "attempts", "duration_s", "wait_s", "worker"]])
    print()
    print(run.stats)
    print()
    print("top customers:", run.result.tasks["top_customers"].result)
    print("per user (a map over the users the API returned):",
          run.result.tasks["per_user"].result)
    written = [
        out / "dag.svg",
        run.save_graph(out / "run.svg"),
        run.save_graph(out / "run.png"),
    ]
    fig = run.timeline()
    fig.savefig(out / "timeline.png", dpi=120, bbox_inches="tight")
    written.append(out / "timeline.png")
    (out / "result.json").write_text(run.result.to_json(indent=2))
    written.append(out / "result.json")
    print()
    print("wrote:", ", ".join(str(p) for p in written))
    return 0 if run.status == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
