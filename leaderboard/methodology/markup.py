"""A small, safe subset of Markdown, rendered to HTML for the methodology page.

The definitions and the worked example are written once, in Markdown, so that
docs/METHODOLOGY.md and /methodology/ say the same words. Only what they use is
supported: `## ` and `### ` headings, paragraphs, `- ` lists, pipe tables, inline
`code`, **strong**, *emphasis*, backslash escapes and [links](#anchor) whose target is
a local anchor or a path on this site. Everything is HTML-escaped first, so text from
the database (network names) cannot inject markup; `md_escape` keeps it from being
read as Markdown either.
"""

from __future__ import annotations

import re

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

_SPECIAL = "\\`*_[]|<>#"
_ESCAPED = re.compile(r"\\([\\`*_\[\]|<>#])")
_CODE = re.compile(r"`([^`]+)`")
_STRONG = re.compile(r"\*\*(.+?)\*\*")
_EM = re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])")
_LINK = re.compile(r"\[([^\]]+)\]\(((?:#|/(?!/))[^)\s]*)\)")
_PLACEHOLDER = "\x00{}\x00"


def md_escape(text: str) -> str:
    """Text from outside (a network name) as literal Markdown: special characters escaped."""
    return "".join("\\" + ch if ch in _SPECIAL else ch for ch in str(text)).replace("\n", " ")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def inline(text: str) -> str:
    """One line of Markdown to HTML (escaped first; code spans are left alone)."""
    kept: list[str] = []

    def keep(html: str) -> str:
        kept.append(html)
        return _PLACEHOLDER.format(len(kept) - 1)

    text = _ESCAPED.sub(lambda m: keep(escape(m.group(1))), text)
    text = _CODE.sub(lambda m: keep(f"<code>{escape(m.group(1))}</code>"), text)
    text = escape(text)
    text = _LINK.sub(lambda m: f'<a href="{m.group(2)}">{m.group(1)}</a>', text)
    text = _STRONG.sub(r"<strong>\1</strong>", text)
    text = _EM.sub(r"<em>\1</em>", text)
    return re.sub("\x00(\\d+)\x00", lambda m: kept[int(m.group(1))], text)


def _cells(line: str) -> list[str]:
    line = line.strip()
    line = line[1:] if line.startswith("|") else line
    line = line[:-1] if line.endswith("|") and not line.endswith("\\|") else line
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line)]


_NUMBER = re.compile(r"[−+\-]?\d[\d.,]*%?(?: [\[(].*[\])])?|—|")


def _table(lines: list[str]) -> str:
    """A pipe table; columns whose every cell is a number are right-aligned."""
    head, rows = _cells(lines[0]), [_cells(x) for x in lines[2:]]
    numeric = [bool(rows) and all(_NUMBER.fullmatch(r[i]) for r in rows if i < len(r)) for i in range(len(head))]

    def cell(tag: str, i: int, text: str) -> str:
        align = ' class="num"' if i < len(numeric) and numeric[i] else ""
        scope = ' scope="col"' if tag == "th" else ""
        return f"<{tag}{scope}{align}>{inline(text)}</{tag}>"

    th = "".join(cell("th", i, h) for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<div class="table-wrap"><table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'


def to_html(markdown: str) -> SafeString:
    """Blocks separated by blank lines: headings, lists, tables, paragraphs."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n", markdown.strip()):
        lines = block.strip("\n").splitlines()
        first = lines[0]
        if m := re.match(r"(#{2,4}) (.+)$", first):
            level, title, anchor = len(m.group(1)), m.group(2), slug(m.group(2))
            out.append(f'<h{level} id="{anchor}">{inline(title)}</h{level}>')
            lines = lines[1:]
            if not lines:
                continue
            first = lines[0]
        if first.startswith("- "):
            items, current = [], []
            for line in lines:
                if line.startswith("- "):
                    if current:
                        items.append(" ".join(current))
                    current = [line[2:]]
                else:
                    current.append(line.strip())
            items.append(" ".join(current))
            out.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in items) + "</ul>")
        elif first.startswith("|") and len(lines) > 1 and re.fullmatch(r"\|[\s\-:|]+\|?", lines[1].strip()):
            out.append(_table(lines))
        else:
            out.append(f"<p>{inline(' '.join(x.strip() for x in lines))}</p>")
    return mark_safe("\n".join(out))
