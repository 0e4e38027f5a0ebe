"""A results document (sections of paragraphs, tables, images and code) and its two renderings:
Markdown with figures beside it, and one self-contained HTML page."""

from __future__ import annotations

import base64
import html
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class Image:
    """A PNG to embed, under a short file name."""

    path: Path
    name: str
    caption: str


@dataclass(frozen=True)
class Code:
    text: str
    language: str = ""


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)  # str (a paragraph), pd.DataFrame (a table), Image, Code


@dataclass
class Document:
    title: str
    sections: list[Section]


# ----------------------------------------------------------------------------- rendering


def _md_table(frame: pd.DataFrame) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def render_markdown(document: Document, figures: Path, link_prefix: str) -> str:
    """Markdown; images are copied into ``figures`` and linked as ``link_prefix/name``."""
    out = [f"# {document.title}", ""]
    for section in document.sections:
        if section.title:
            out += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, pd.DataFrame):
                out.append(_md_table(block))
            elif isinstance(block, Image):
                figures.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(block.path, figures / block.name)
                out.append(f"![{block.caption}]({link_prefix}/{block.name})")
            elif isinstance(block, Code):
                out.append(f"```{block.language}\n{block.text}\n```")
            else:
                out.append(str(block))
            out.append("")
    return "\n".join(out).rstrip() + "\n"


_CODE_SPAN = re.compile(r"`([^`]+)`")


def _inline_html(text: str) -> str:
    return _CODE_SPAN.sub(lambda m: f"<code>{m.group(1)}</code>", html.escape(text, quote=False))


def render_html(document: Document) -> str:
    """One self-contained HTML page (images inlined as data URIs)."""
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(document.title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.45}"
        "table{border-collapse:collapse;margin:1em 0;font-size:90%}td,th{border:1px solid #ccc;padding:4px "
        "8px;text-align:left}"
        "th{background:#f3f3f3}img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow:auto}code{background:#f3f3f3}</style>",
        "</head><body>",
        f"<h1>{html.escape(document.title)}</h1>",
    ]
    for section in document.sections:
        if section.title:
            out.append(f"<h2>{_inline_html(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, pd.DataFrame):
                head = "".join(f"<th>{_inline_html(str(c))}</th>" for c in block.columns)
                body = "".join(
                    "<tr>" + "".join(f"<td>{_inline_html(str(v))}</td>" for v in row) + "</tr>"
                    for row in block.itertuples(index=False)
                )
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif isinstance(block, Image):
                data = base64.b64encode(block.path.read_bytes()).decode()
                out.append(
                    f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(block.caption)}'>"
                    f"<figcaption>{html.escape(block.caption)}</figcaption></figure>"
                )
            elif isinstance(block, Code):
                out.append(f"<pre><code>{html.escape(block.text)}</code></pre>")
            elif str(block).startswith("- "):
                items = "".join(f"<li>{_inline_html(line[2:])}</li>" for line in str(block).splitlines())
                out.append(f"<ul>{items}</ul>")
            else:
                out.append(f"<p>{_inline_html(str(block))}</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
