"""How a string that came from a user (a key above all: any text without NUL, up to
1024 characters; also node names, endpoints, commands, error messages) reaches a
terminal: every character a terminal would not simply print is escaped visibly, so no
key can end a line, move the cursor, recolour the screen or reorder the text around it,
and a long one is cut with a visible mark so that the columns of a table stay aligned."""

from __future__ import annotations

import unicodedata

KEY_WIDTH = 40  # terminal columns a key gets in plain output (a UUID fits); --wide: no limit
CUT = "…"


def shown(text: str, width: int | None = None) -> str:
    """``text`` with its unprintable characters escaped (C0 and C1 controls, DEL, line
    and paragraph separators, bidi overrides and other format characters, spaces other
    than " ", unassigned code points: ``\\n``, ``\\x1b``, ``\\u202e``) and a backslash
    doubled (so that an escape is never mistaken for the key's own text); cut to ``width``
    columns, the last one ``…``, when it is wider (``None``: whole). An escape is never
    cut in two."""
    if text.isprintable() and "\\" not in text:
        if width is None or display_width(text) <= width:
            return text
        parts = list(text)
    else:
        parts = [c if c.isprintable() and c != "\\" else _escaped(c) for c in text]
        text = "".join(parts)
        if width is None or display_width(text) <= width:
            return text
    kept, used = [], 0
    for part in parts:
        used += display_width(part)
        if used > width - 1:
            break
        kept.append(part)
    return "".join(kept) + CUT


def display_width(text: str) -> int:
    """The columns ``text`` (escaped already) takes on a terminal: 2 for a wide East
    Asian character, 0 for a combining mark, 1 for the rest."""
    if text.isascii():
        return len(text)
    return sum(map(_width, text))


def _width(c: str) -> int:
    if c.isascii():
        return 1
    if unicodedata.category(c) in ("Mn", "Me"):
        return 0
    return 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1


def _escaped(c: str) -> str:
    if c == "\\":
        return "\\\\"
    return c.encode("unicode_escape").decode("ascii")  # \n, \t, \x1b, \x85, \u202e, \U000e0001
