"""benchmarks/RESULTS.md is written by more than one command: `benchmarks.run` writes the body,
and `benchmarks.scoring` / `benchmarks.serving` each own one section between markers, which they
replace (or append) and every other command keeps. Each section names the command it came from.

    from benchmarks.sections import write_section
"""

from __future__ import annotations

import re
from pathlib import Path

BEGIN, END = "<!-- begin section {name} -->", "<!-- end section {name} -->"
_ANY = re.compile(r"<!-- begin section (?P<name>[\w-]+) -->.*?<!-- end section (?P=name) -->\n?", re.S)


def write_section(path: Path, name: str, text: str) -> None:
    """Put ``text`` into section ``name`` of ``path``: replace it if there, append it if not."""
    path = Path(path)
    block = f"{BEGIN.format(name=name)}\n{text.rstrip()}\n{END.format(name=name)}\n"
    current = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(BEGIN.format(name=name)) + r".*?" + re.escape(END.format(name=name)) + r"\n?", re.S)
    if pattern.search(current):
        updated = pattern.sub(lambda _: block, current)
    else:
        updated = current.rstrip() + ("\n\n" if current.strip() else "") + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(updated)


def kept_sections(path: Path) -> str:
    """Every section of ``path`` (empty if none or no file), to keep when rewriting its body."""
    path = Path(path)
    if not path.exists():
        return ""
    return "".join(match.group(0) for match in _ANY.finditer(path.read_text()))
