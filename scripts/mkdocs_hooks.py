"""A MkDocs hook (mkdocs.yml: hooks): the docstrings are written with Sphinx's roles
(:class:`Location`, :meth:`call`), which mkdocstrings leaves as text. On the pages, each
becomes its code, linked to the name's entry on the same page when there is one."""

from __future__ import annotations

import re

ROLE = re.compile(r":(?:class|meth|func|data|attr|mod|exc):<code>([^<]+)</code>")


def on_page_content(html: str, **_) -> str:
    if ":<code>" not in html:
        return html
    ids = re.findall(r'id="([\w.]+)"', html)

    def linked(m: re.Match) -> str:
        name = m.group(1).lstrip("~")
        short = name.rsplit(".", 1)[-1]
        target = next((i for i in ids if i == name or i.endswith("." + short)), None)
        code = f"<code>{short if name.startswith('forsetid.') else name}</code>"
        return f'<a href="#{target}">{code}</a>' if target else code

    return ROLE.sub(linked, html)
