"""Reading the worked examples our docs show: the one parser every doc-checking test uses.

A vector is a fenced block whose info string is ``hex vector=NAME`` (the fence may be
indented, as in a list): on each line the hex digits before ``#`` are the octets, whitespace
between them ignored; what follows ``#`` is annotation.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["doc_vectors", "hex_lines", "parse_hex"]

_FENCE = re.compile(
    r"^[ \t]*```(?P<info>[^\n]*)\n(?P<body>.*?)^[ \t]*```[ \t]*$", re.MULTILINE | re.DOTALL
)
_VECTOR_INFO = re.compile(r"hex\s+vector=(?P<name>[A-Za-z0-9_.-]+)")


def parse_hex(body: str) -> bytes:
    """The octets of a vector block: on each line, the hex digits before any ``#``."""
    digits = "".join("".join(line.split("#", 1)[0].split()) for line in body.splitlines())
    return bytes.fromhex(digits)


def doc_vectors(doc: Path | str) -> dict[str, bytes]:
    """``{name: octets}`` for every vector block of ``doc`` (a path, or the text itself); a
    name appearing twice is an error."""
    text = doc.read_text(encoding="utf-8") if isinstance(doc, Path) else doc
    found: dict[str, bytes] = {}
    for fence in _FENCE.finditer(text):
        info = _VECTOR_INFO.fullmatch(fence.group("info").strip())
        if info is None:
            continue
        name = info.group("name")
        assert name not in found, f"vector {name!r} appears twice"
        found[name] = parse_hex(fence.group("body"))
    return found


def hex_lines(data: bytes) -> str:
    """``data`` as rows of 16 spaced octets, ready to paste into a doc."""
    return "\n".join(data[i : i + 16].hex(" ").upper() for i in range(0, len(data), 16))
