"""Credentials (SPEC §8): secret sets looked up by name and kept out of every output.

A vault is any mapping of set name -> dict of secrets, or an :class:`EnvVault`. The engine
passes a task's set to its tool as the keyword argument ``credentials``, and
:class:`Redactor` scrubs every secret value from results, errors and stacks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from oktyv_nb.errors import InvalidOptionError, VaultNotFoundError

__all__ = ["REDACTED", "EnvVault", "Redactor", "check_vault", "lookup_secrets"]

REDACTED = "***"
MIN_SECRET_LEN = 3  # shorter values would redact ordinary text
SCRUB_DEPTH = 200  # how deep Redactor.value follows nested containers


class EnvVault(Mapping[str, dict[str, str]]):
    """Secret sets from environment variables.

    For the set ``api``, ``EnvVault("OKTYV_")`` collects every variable named
    ``OKTYV_API_<KEY>`` into ``{"key": value}`` (keys lower-cased). Read at lookup time, so
    a variable set after the vault was made is seen.
    """

    def __init__(self, prefix: str = "", environ: Mapping[str, str] | None = None) -> None:
        self.prefix = prefix
        self._environ = os.environ if environ is None else environ

    def __getitem__(self, name: str) -> dict[str, str]:
        head = f"{self.prefix}{name.upper()}_"
        found = {
            k[len(head):].lower(): v
            for k, v in self._environ.items()
            if k.startswith(head) and len(k) > len(head)
        }
        if not found:
            raise KeyError(name)
        return found

    def __iter__(self):  # type: ignore[no-untyped-def]
        names = set()
        for k in self._environ:
            if k.startswith(self.prefix):
                rest = k[len(self.prefix):]
                if "_" in rest:
                    names.add(rest.split("_", 1)[0].lower())
        return iter(sorted(names))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:  # never shows values
        return f"EnvVault(prefix={self.prefix!r})"


def check_vault(vault: Any) -> None:
    """Raise InvalidOptionError unless ``vault`` is None or a mapping (never shows it)."""
    if vault is not None and not isinstance(vault, Mapping):
        raise InvalidOptionError(
            f"vault must be a mapping of set name -> dict of secrets, or ok.EnvVault(prefix); "
            f"got {type(vault).__name__}",
            option="vault",
        )


def lookup_secrets(vault: Mapping[str, Any] | None, name: str, task_id: str) -> dict[str, Any]:
    """The secret set ``name`` for ``task_id``, or VaultNotFoundError (no values in it)."""
    if vault is None:
        raise VaultNotFoundError(
            f"Task {task_id} needs vault set {name!r} but the run was given no vault; "
            "pass vault={...} or vault=ok.EnvVault(prefix)",
            task_id=task_id,
        )
    try:
        secrets = vault[name]
    except KeyError:
        raise VaultNotFoundError(
            f"Task {task_id} needs vault set {name!r}, which the vault does not have",
            task_id=task_id,
        ) from None
    if not isinstance(secrets, Mapping):
        raise VaultNotFoundError(
            f"Task {task_id}: vault set {name!r} must be a mapping of secrets, "
            f"got {type(secrets).__name__}",
            task_id=task_id,
        )
    return dict(secrets)


class Redactor:
    """Replaces known secret values inside strings and nested data with ``***``."""

    __slots__ = ("secrets",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: set[str] = set()
        self.add(secrets)

    def add(self, values: Iterable[Any]) -> None:
        for v in values:
            if isinstance(v, (bytes, bytearray)):
                v = v.decode("utf-8", "replace")
            v = str(v) if not isinstance(v, str) else v
            if len(v) >= MIN_SECRET_LEN:
                self.secrets.add(v)

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def text(self, s: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            if secret in s:
                s = s.replace(secret, REDACTED)
        return s

    def value(self, v: Any) -> Any:
        """``v`` with secrets scrubbed from every string inside it (copies as needed).

        Never raises: an object whose ``repr`` raises, a container that holds itself and
        nesting deeper than :data:`SCRUB_DEPTH` are replaced by short placeholder strings
        (what cannot be read cannot be shown to hold no secret).
        """
        if not self.secrets:
            return v
        return self._value(v, set(), 0)

    def _value(self, v: Any, path: set[int], depth: int) -> Any:
        if isinstance(v, str):
            return self.text(v)
        if v is None or isinstance(v, bool):
            return v
        if isinstance(v, (int, float)):  # a numeric secret (a PIN) returned as a number
            return REDACTED if str(v) in self.secrets else v
        if isinstance(v, (dict, list, tuple)):
            if id(v) in path:
                return "<circular reference>"
            if depth >= SCRUB_DEPTH:
                return f"<nested deeper than {SCRUB_DEPTH} levels>"
            path.add(id(v))
            try:
                if isinstance(v, dict):
                    return {
                        self._value(k, path, depth + 1): self._value(x, path, depth + 1)
                        for k, x in v.items()
                    }
                items = [self._value(x, path, depth + 1) for x in v]
                return items if isinstance(v, list) else tuple(items)
            finally:
                path.discard(id(v))
        try:
            r = repr(v)
        except Exception:
            return f"<unrepresentable {type(v).__name__} object>"
        return self.text(r) if any(s in r for s in self.secrets) else v
