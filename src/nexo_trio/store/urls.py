"""What a ``store:`` value names: a SQLite file (a path) or a PostgreSQL database (a URL).

Read without importing a database driver: the commands parse ``--store`` / ``NEXO_STORE``
before they know which store they open.
"""

from __future__ import annotations

import urllib.parse

SCHEMES = ("postgresql", "postgres")
"""URL schemes that name a PostgreSQL store."""


def is_postgres_url(store: str) -> bool:
    """Whether a ``store:`` value names a PostgreSQL database (else it is a SQLite path)."""
    scheme, sep, _ = store.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def is_url(store: str) -> bool:
    """Whether a ``store:`` value is a URL at all (``scheme://...``)."""
    scheme, sep, _ = store.partition("://")
    return bool(sep) and scheme.isascii() and scheme.replace("+", "").isalnum()


def redact_url(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return "postgresql://(unparsable URL)"
    if password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


__all__ = ["SCHEMES", "is_postgres_url", "is_url", "redact_url"]
