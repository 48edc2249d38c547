"""Write the reference pages that are made from the code, so that they cannot drift from it:

* docs/reference/protocol.md from forsetid/protocol.py (every message, field, type, default, enumeration)
* docs/reference/config.md from forsetid/config.py (every key of forseti.toml, its type and default)
* docs/reference/commands.md from forsetictl's and forsetid's argument parsers (every command and option)

    python scripts/gen_docs.py          # write them
    python scripts/gen_docs.py --check  # exit 1 naming the pages that are out of date

What each field means is written here (the code says names, types and defaults); tests/test_docs.py
regenerates the pages and compares them, and fails when a field, a key or a command has no words."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import docs_cli  # noqa: E402
import docs_config  # noqa: E402
import docs_protocol  # noqa: E402

PAGES = {
    "docs/reference/protocol.md": docs_protocol.page,
    "docs/reference/config.md": docs_config.page,
    "docs/reference/commands.md": docs_cli.page,
}


def stale() -> list[str]:
    """The generated pages whose text differs from what the code makes now."""
    return [name for name, make in PAGES.items() if (ROOT / name).read_text() != make()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page is out of date")
    args = ap.parse_args(argv)
    if args.check:
        out = stale()
        for name in out:
            print(f"{name} is out of date: run python scripts/gen_docs.py", file=sys.stderr)
        return 1 if out else 0
    for name, make in PAGES.items():
        (ROOT / name).write_text(make())
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
