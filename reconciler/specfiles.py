"""Which files of a directory form one spec. Kept free of imports: the thin `apply` client (client.py)
reads a directory's spec files the way the loader (watch/sources.py) does, without loading it."""

from __future__ import annotations

# Both spellings: compose users name their files `.yml`, and a file left unread is a silent deletion.
SUFFIXES = (".yaml", ".yml")


def is_spec_name(name: str) -> bool:
    """A directory's spec file by its name (not hidden ones: editors' temporaries)."""
    return name.endswith(SUFFIXES) and not name.startswith(".")
