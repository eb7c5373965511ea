"""``--markdown`` of the benchmarks: each writes its report between two marker lines of
its own, so that a file may hold more than one report (or prose around it)."""

from __future__ import annotations

from pathlib import Path


def markers(script: str) -> tuple[str, str]:
    """The begin and end lines of ``script``'s block (e.g. ``"cache.py"``)."""
    return (f"<!-- begin: written by benchmarks/{script} -->",
            f"<!-- end: written by benchmarks/{script} -->")  # fmt: skip


def write_marked(path: Path, text: str, script: str, title: str, *, append: bool = False) -> None:
    """Replace ``script``'s block in ``path`` with ``text``. A file without the block is
    written anew under ``# title``, or, with ``append``, gets the block at its end under
    ``## title``."""
    begin, end = markers(script)
    old = path.read_text() if path.exists() else ""
    start, stop = old.find(begin), old.find(end)
    if 0 <= start < stop:
        path.write_text(f"{old[:start]}{begin}\n{text}{end}{old[stop + len(end) :]}")
    elif append:
        path.write_text(f"{old}\n## {title}\n\n{begin}\n{text}{end}\n")
    else:
        path.write_text(f"# {title}\n\n{begin}\n{text}{end}\n")
