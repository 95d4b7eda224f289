"""`open_store`: URLs to backends, without connecting."""

from __future__ import annotations

from pathlib import Path

import pytest

from firebreak.store import DEFAULT_STORE_URL, MemoryStore, SQLiteStore, open_store


def test_memory_url() -> None:
    assert isinstance(open_store("memory://"), MemoryStore)


def test_sqlite_relative_and_absolute_paths() -> None:
    rel = open_store("sqlite:///data/runs.db")
    assert isinstance(rel, SQLiteStore)
    assert rel.path == Path("data/runs.db")
    absolute = open_store("sqlite:////var/lib/fb/runs.db?synchronous=normal")
    assert isinstance(absolute, SQLiteStore)
    assert (absolute.path, absolute.synchronous) == (Path("/var/lib/fb/runs.db"), "NORMAL")


def test_default_comes_from_env_then_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIREBREAK_STORE", "memory://")
    assert isinstance(open_store(), MemoryStore)
    monkeypatch.delenv("FIREBREAK_STORE")
    store = open_store()
    assert isinstance(store, SQLiteStore)
    assert store.path == Path(".firebreak/firebreak.db")
    assert DEFAULT_STORE_URL == "sqlite:///./.firebreak/firebreak.db"


async def test_default_store_creates_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FIREBREAK_STORE", raising=False)
    async with open_store() as store:
        await store.create_run("r1", "wf", None)
    assert (tmp_path / ".firebreak" / "firebreak.db").is_file()


@pytest.mark.parametrize("url", ["ftp://x", "mysql://u@h/db"])
def test_unsupported_schemes_are_named(url: str) -> None:
    scheme = url.split(":", 1)[0]
    with pytest.raises(ValueError, match=rf"scheme '{scheme}'.*supported: memory://, sqlite:///"):
        open_store(url)


@pytest.mark.parametrize(
    "url",
    [
        "runs.db",
        "sqlite://host/runs.db",
        "sqlite:///",
        "sqlite:///x.db?synchronous=OFF",
        "sqlite:///x.db?colour=red",
    ],
)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="store URL"):
        open_store(url)
