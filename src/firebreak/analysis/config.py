"""The deployment config `firebreak check` reads: where runs are stored, metrics, the DLQ.

A workflow's code says what it does; how it is deployed lives beside it, in
``firebreak.toml`` (or the file given with ``--config``)::

    [store]
    url = "postgresql://db/firebreak"   # else --store, else $FIREBREAK_STORE

    [metrics]
    exporter = "prometheus"             # or "otel"; "none" (or no section) = no metrics

    [dlq]
    destination = "store"               # the store's dead-letter queue, or a URL
    owner = "payments-oncall"           # optional: who empties it

    [check]
    external = ["validate"]             # agents that call a service (see FB001)
    local = ["merge"]                   # agents that call nothing (silences FB002)
    payments = ["post_entry"]           # agents that move money (FB011)
    errors = ["LedgerLocked"]           # more error types that need a runbook (FB009)
    runbooks = "docs/runbooks"          # where runbooks live, relative to this file
    ignore = ["FB004"]                  # rule codes not to report
    long_run = 60                       # seconds: runs longer than this need a durable store
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from firebreak.errors import ConfigError

__all__ = ["CONFIG_FILE", "DeploymentConfig", "load_config"]

CONFIG_FILE = "firebreak.toml"
"""The config file `load_config` looks for in the current directory."""

StoreSource = Literal["option", "config", "env", "default"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentConfig:
    """How a workflow is deployed, as far as the production checks care.

    Example:
        >>> DeploymentConfig(store="memory://", metrics="prometheus").store_scheme
        'memory'
    """

    store: str | None = None
    """The checkpoint store URL, or ``None`` when nothing names one (the default applies)."""
    store_source: StoreSource = "default"
    """Where `store` came from: ``--store``, the config file, ``$FIREBREAK_STORE``, nothing."""
    metrics: str | None = None
    """The metrics exporter (``prometheus``, ``otel``, ...), or ``None`` for none."""
    dlq: str | None = None
    """Where dead-lettered runs go: ``store`` (the store's queue) or a URL; ``None``: unset."""
    external: frozenset[str] = frozenset()
    """Agents declared to call an external service."""
    local: frozenset[str] = frozenset()
    """Agents declared to call no service."""
    payments: frozenset[str] = frozenset()
    """Agents declared to move money."""
    errors: tuple[str, ...] = ()
    """Extra error type names that need a runbook."""
    runbooks: Path = Path("docs/runbooks")
    """The runbook directory (``<kebab-error-type>.md`` each)."""
    ignore: frozenset[str] = frozenset()
    """Rule codes not to report."""
    long_run: float = 60.0
    """Seconds beyond which a run is long (it needs a durable store)."""
    path: Path | None = None
    """The file this config was read from, if any."""

    @property
    def store_scheme(self) -> str | None:
        """The store URL's scheme (``memory``, ``sqlite``, ...), or ``None``."""
        if self.store is None:
            return None
        scheme, sep, _ = self.store.partition("://")
        return scheme.lower() if sep else None


def _strings(section: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = section.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(key, f"{where}: [{key}] must be a list of strings, got {value!r}")
    return value


def _section(data: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    section = data.get(name, {})
    if not isinstance(section, Mapping):
        raise ConfigError(name, f"{where}: [{name}] must be a table")
    return section


def _optional_str(section: Mapping[str, Any], key: str, where: str) -> str | None:
    value = section.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(key, f"{where}: {key} must be a string, got {value!r}")
    return value


def load_config(
    path: Path | None = None,
    *,
    store: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> DeploymentConfig:
    """Read the deployment config: `path`, else ``./firebreak.toml`` if present, else none.

    The store URL is taken from `store` (``--store``) first, then the file's ``[store] url``,
    then ``$FIREBREAK_STORE``.

    Raises:
        ConfigError: the file is missing (when named), not TOML, or holds a bad value.
    """
    env = os.environ if env is None else env
    base = cwd or Path.cwd()
    data: Mapping[str, Any] = {}
    if path is None and (base / CONFIG_FILE).is_file():
        path = base / CONFIG_FILE
    where = str(path) if path is not None else "config"
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("config", f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError("config", f"{path}: not a readable TOML file: {exc}") from None
    store_sec = _section(data, "store", where)
    metrics_sec = _section(data, "metrics", where)
    dlq_sec = _section(data, "dlq", where)
    check_sec = _section(data, "check", where)
    source: StoreSource = "default"
    url = store
    if url is not None:
        source = "option"
    elif (url := _optional_str(store_sec, "url", where)) is not None:
        source = "config"
    elif (url := env.get("FIREBREAK_STORE")) is not None:
        source = "env"
    metrics = _optional_str(metrics_sec, "exporter", where)
    if metrics is not None and metrics.lower() in ("", "none", "off"):
        metrics = None
    long_run = check_sec.get("long_run", 60.0)
    if isinstance(long_run, bool) or not isinstance(long_run, int | float) or long_run <= 0:
        raise ConfigError("long_run", f"{where}: long_run must be seconds > 0, got {long_run!r}")
    runbooks = Path(_optional_str(check_sec, "runbooks", where) or "docs/runbooks")
    if not runbooks.is_absolute():
        runbooks = (path.parent if path is not None else base) / runbooks
    return DeploymentConfig(
        store=url or None,
        store_source=source,
        metrics=metrics,
        dlq=_optional_str(dlq_sec, "destination", where),
        external=frozenset(_strings(check_sec, "external", where)),
        local=frozenset(_strings(check_sec, "local", where)),
        payments=frozenset(_strings(check_sec, "payments", where)),
        errors=tuple(_strings(check_sec, "errors", where)),
        runbooks=runbooks,
        ignore=frozenset(_strings(check_sec, "ignore", where)),
        long_run=float(long_run),
        path=path,
    )
