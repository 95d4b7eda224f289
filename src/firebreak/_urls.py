"""Our own query options out of a server URL; the rest stays for the client library."""

from __future__ import annotations

import difflib
from collections.abc import Collection
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["split_options"]


def split_options(url: str, names: Collection[str]) -> tuple[dict[str, str], str]:
    """Ours (the options of `url` named in `names`) and `url` with only the others left.

    A repeated option's last value wins; what is left goes to the library that connects.

    Raises:
        ValueError: an option that is not ours but is spelt nearly as one of ours is
            (``prefx=``): a typo there would silently share the default names.
    """
    parts = urlsplit(url)
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in names:
            ours[key] = value
            continue
        near = difflib.get_close_matches(key, names, n=1, cutoff=0.8)
        if near:
            raise ValueError(f"URL option {key!r} is unknown: did you mean {near[0]!r}?")
        theirs.append((key, value))
    return ours, urlunsplit(parts._replace(query=urlencode(theirs)))


def shown(url: str) -> str:
    """`url` without its password, as an error message may show it."""
    parts = urlsplit(url)
    try:
        password = parts.password
    except ValueError:  # a malformed netloc: keep nothing after the scheme that may hide one
        return f"{parts.scheme}://…"
    if password is None:
        return url
    host = parts.hostname or ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}{port}"))
