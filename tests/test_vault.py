"""SPEC §8: secret sets reach tools as ``credentials=`` and never leave in any output."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import oktyv_nb as ok
from oktyv_nb.execution.engine import RunConfig, RunOutcome, run_graph
from oktyv_nb.execution.events import EventLog
from oktyv_nb.model.graph import prepare
from oktyv_nb.model.vault import REDACTED, Redactor, lookup_secrets
from oktyv_nb.results.frame import to_dataframe
from oktyv_nb.results.result import to_result

SECRET = "s3cr3t-T0KEN-value"
PASSWORD = "hunter2-password"


def login(credentials: dict[str, str], user: str) -> dict[str, Any]:
    return {"user": user, "echo": credentials["token"], "nested": [{"pw": credentials["pw"]}],
            "header": f"Bearer {credentials['token']}"}


async def alogin(credentials: dict[str, str]) -> str:
    await asyncio.sleep(0)
    return sorted(credentials)[0]


def leak_in_error(credentials: dict[str, str]) -> None:
    raise PermissionError(f"login refused for token {credentials['token']}")


def plain(**kwargs: Any) -> dict[str, Any]:
    return kwargs


TOOLS = {"login": login, "alogin": alogin, "leak": leak_in_error, "plain": plain}
VAULT = {"api": {"token": SECRET, "pw": PASSWORD}, "empty": {}}


def run_outcome(tasks: list[dict[str, Any]], vault: Any, events: EventLog | None = None,
                **config: Any) -> RunOutcome:
    request_config, graph = prepare({"tasks": tasks, "config": config}, TOOLS)
    subs = [events] if events is not None else None
    return asyncio.run(run_graph(graph, RunConfig.from_request(request_config), vault=vault,
                                  subscribers=subs))


def test_credentials_are_passed_as_a_keyword_argument() -> None:
    seen: dict[str, Any] = {}

    def take(**kwargs: Any) -> None:
        seen.update(kwargs)

    result = ok.execute_request(
        {"tasks": [{"id": "a", "tool": "take", "vault": "api", "params": {"x": 1}},
                   {"id": "b", "tool": "alogin", "vault": "api"},
                   {"id": "c", "tool": "plain", "params": {"y": 2}}]},
        {**TOOLS, "take": take}, vault=VAULT)
    assert result.status == "success"
    assert seen == {"x": 1, "credentials": {"token": SECRET, "pw": PASSWORD}}
    assert result.tasks["b"].result == "pw"
    assert result.tasks["c"].result == {"y": 2}  # no vault: no credentials


def test_env_vault(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OKT_API_TOKEN", SECRET)
    monkeypatch.setenv("OKT_API_PW", PASSWORD)
    monkeypatch.setenv("OKT_APIX_OTHER", "not-this-one")
    monkeypatch.setenv("OTHER_API_TOKEN", "nor-this")
    vault = ok.EnvVault("OKT_")
    assert vault["api"] == {"token": SECRET, "pw": PASSWORD}
    assert "api" in list(vault) and "apix" in list(vault)
    assert SECRET not in repr(vault)
    with pytest.raises(KeyError):
        vault["db"]
    monkeypatch.setenv("OKT_DB_URL", "sqlite://x")  # read at lookup time
    assert vault["db"] == {"url": "sqlite://x"}
    result = ok.execute_request(
        {"tasks": [{"id": "a", "tool": "login", "vault": "api", "params": {"user": "u"}}]},
        TOOLS, vault=vault)
    assert result.tasks["a"].status == "success"
    assert result.tasks["a"].result["echo"] == REDACTED


def test_env_vault_with_explicit_environ() -> None:
    vault = ok.EnvVault("X_", environ={"X_MAIL_USER": "me", "X_MAIL_PASSWORD": "pw1234"})
    assert vault["mail"] == {"user": "me", "password": "pw1234"}
    assert len(vault) == 1


@pytest.mark.parametrize(
    ("vault", "text"),
    [(VAULT, "does not have"), (None, "given no vault"), ({"db": "flat"}, "must be a mapping")],
)
def test_missing_set_fails_with_vault_not_found(vault: Any, text: str) -> None:
    calls: list[int] = []

    def tool(credentials: Any) -> None:
        calls.append(1)

    result = ok.execute_request(
        {"tasks": [{"id": "a", "tool": "tool", "vault": "db",
                    "retryPolicy": {"maxAttempts": 3, "initialDelay": 1}},
                   {"id": "b", "tool": "plain", "dependsOn": ["a"]}]},
        {**TOOLS, "tool": tool}, vault=vault)
    a = result.tasks["a"]
    assert (a.status, a.attempts, a.error.code) == ("failed", 1, "VAULT_NOT_FOUND")
    assert "Task a" in a.error.message and "'db'" in a.error.message and text in a.error.message
    assert calls == []
    assert result.tasks["b"].error.code == "DEPENDENCY_FAILED"


def test_lookup_secrets_copies_the_set() -> None:
    got = lookup_secrets(VAULT, "api", "t")
    got["token"] = "changed"
    assert VAULT["api"]["token"] == SECRET
    with pytest.raises(ok.VaultNotFoundError) as info:
        lookup_secrets(VAULT, "nope", "t")
    assert info.value.code == "VAULT_NOT_FOUND"


def _assert_clean(text: str) -> None:
    assert SECRET not in text and PASSWORD not in text, text


def test_secrets_never_leave_a_run() -> None:
    tasks = [
        {"id": "ok", "tool": "login", "vault": "api", "params": {"user": "u"}},
        {"id": "leak", "tool": "leak", "vault": "api"},
        # a task without vault that passes a secret on still cannot show it
        {"id": "relay", "tool": "plain", "params": {"t": "${ok.result.echo}",
                                                    "s": "got ${ok.result.nested}"}},
        {"id": "report", "tool": "plain", "runIf": "all_done",
         "params": {"why": "${leak.error.message}", "err": "${leak.error}"}},
    ]
    events = EventLog()
    out = run_outcome(tasks, VAULT, events)
    result = to_result(out)
    r = result.tasks
    assert r["ok"].status == "success" and r["leak"].status == "failed"
    assert r["ok"].result == {"user": "u", "echo": REDACTED, "nested": [{"pw": REDACTED}],
                              "header": f"Bearer {REDACTED}"}
    assert r["leak"].error.message == f"login refused for token {REDACTED}"
    assert r["relay"].result["t"] == REDACTED
    assert r["report"].result["why"] == f"login refused for token {REDACTED}"
    for text in (result.to_json(), result.model_dump_json(),
                 json.dumps(result.model_dump(by_alias=True, mode="json"))):
        _assert_clean(text)
    assert "Traceback" in r["leak"].error.stack
    df = to_dataframe(out)
    _assert_clean(df.to_json(default_handler=str, date_format="iso"))
    _assert_clean(df.to_string())
    _assert_clean(repr(df.to_dict()))
    assert df.loc["leak", "error_message"] == f"login refused for token {REDACTED}"
    # the records subscribers see live hold no secret in their errors either
    for e in events:
        if e.task_id is not None and e.record.error is not None:
            _assert_clean(e.record.error.message)
            _assert_clean(e.record.error.stack or "")


def test_rollback_errors_are_scrubbed() -> None:
    def undo(credentials: dict[str, str]) -> None:
        raise RuntimeError(f"undo failed with {credentials['pw']}")

    def fail() -> None:
        raise ValueError("boom")

    tasks = [{"id": "a", "tool": "login", "vault": "api", "params": {"user": "u"},
              "rollback": {"tool": "undo", "params": {}}},
             {"id": "b", "tool": "fail", "dependsOn": ["a"]}]
    result = ok.execute_request({"tasks": tasks, "config": {"failureMode": "rollback"}},
                                {**TOOLS, "undo": undo, "fail": fail}, vault=VAULT)
    a = result.tasks["a"]
    assert a.rolled_back is False
    assert a.rollback_error.message == f"undo failed with {REDACTED}"
    _assert_clean(result.to_json())


def test_redactor() -> None:
    red = Redactor([SECRET, "ab", b"bytes-secret", 123456])
    assert red.text(f"x{SECRET}y") == f"x{REDACTED}y"
    short = "ab stays: too short to redact safely"
    assert red.text(short) == short
    assert red.value({"k": ("bytes-secret", 123456, 7)}) == {"k": (REDACTED, REDACTED, 7)}
    assert red.value({SECRET: 1}) == {REDACTED: 1}
    assert not Redactor() and Redactor().value(SECRET) == SECRET
