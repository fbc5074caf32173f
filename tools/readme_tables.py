"""Table blocks of docs/RESULTS.md: the Markdown between ``<!-- table:NAME -->`` and
``<!-- /table:NAME -->`` is owned by ``tools/reproduce.py``, which replaces exactly that block with
fresh measurements and leaves every other byte of the file alone."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_NAME = r"[A-Za-z0-9_-]+"
_OPEN = re.compile(rf"<!--\s*table:({_NAME})\s*-->")


def markers(name: str) -> tuple[str, str]:
    return f"<!-- table:{name} -->", f"<!-- /table:{name} -->"


def block_names(text: str) -> list[str]:
    """Names of the table blocks in ``text``, in order (each must also be closed)."""
    return [m.group(1) for m in _OPEN.finditer(text) if markers(m.group(1))[1] in text]


def replace_block(text: str, name: str, content: str) -> str:
    """``text`` with the block ``name`` holding ``content``; raises KeyError when the markers are
    missing and ValueError when they are duplicated or out of order (a hand edit gone wrong)."""
    if not re.fullmatch(_NAME, name):
        raise ValueError(f"invalid table name {name!r}")
    start, end = markers(name)
    i, j = text.find(start), text.find(end)
    if i < 0 or j < 0:
        raise KeyError(name)
    if text.count(start) != 1 or text.count(end) != 1 or j < i:
        raise ValueError(f"table {name!r}: markers duplicated or out of order")
    body = content.strip("\n")
    return f"{text[: i + len(start)]}\n{body}\n{text[j:]}"


def _is_separator(line: str) -> bool:
    """A Markdown table's ``|---|:--:|`` line (outer pipes optional)."""
    cells = line.strip().strip("|").split("|")
    return "|" in line and all(re.fullmatch(r"\s*:?-+:?\s*", c) for c in cells)


def markdown_tables(output: str) -> list[str]:
    """The Markdown tables in a tool's output, in order: a header line with ``|``, its separator
    and the ``|`` lines that follow (tables with or without outer pipes)."""
    lines = [line.strip() for line in output.splitlines()]
    found = []
    for i in range(1, len(lines)):
        if _is_separator(lines[i]) and "|" in lines[i - 1]:
            j = i + 1
            while j < len(lines) and "|" in lines[j] and not _is_separator(lines[j]):
                j += 1
            found.append("\n".join(lines[i - 1 : j]))
    return found


def last_markdown_table(output: str) -> str | None:
    """The last Markdown table in a tool's output (None if it printed none)."""
    tables = markdown_tables(output)
    return tables[-1] if tables else None


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; cells are written with ``str`` (pipes escaped)."""

    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
