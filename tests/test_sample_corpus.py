"""The bundled corpus matches its datasheet and the issue's requirements."""

from __future__ import annotations

import json
import re
from collections import Counter

from sentiment.data import SAMPLE_PATH

DATASHEET = SAMPLE_PATH.parent / "DATASHEET.md"


def _rows() -> list[dict]:
    return [json.loads(line) for line in SAMPLE_PATH.read_text().splitlines() if line.strip()]


def test_corpus_size_balance_and_lengths():
    rows = _rows()
    labels = Counter(r["label"] for r in rows)
    words = [len(r["text"].split()) for r in rows]
    assert len(rows) >= 300 and labels["positive"] == labels["negative"]
    assert 15 <= min(words) and max(words) <= 400
    assert len({r["id"] for r in rows}) == len(rows) and len({r["text"] for r in rows}) == len(rows)
    hard = Counter(r["hard_case"] for r in rows)
    assert {"negation", "contrast", "sarcasm", "mixed"} <= set(hard)
    assert all(
        Counter(r["label"] for r in rows if r["hard_case"] == kind).keys() == {"positive", "negative"}
        for kind in ("negation", "contrast", "sarcasm", "mixed")
    )


def test_datasheet_numbers_come_from_the_file():
    rows = _rows()
    sheet = DATASHEET.read_text()
    labels = Counter(r["label"] for r in rows)
    words = [len(r["text"].split()) for r in rows]
    assert f"{len(rows)} English movie reviews" in sheet
    assert f"{labels['positive']} positive, {labels['negative']} negative" in sheet
    assert f"{min(words)} to {max(words)} words" in sheet
    assert f"{sum('<br' in r['text'] for r in rows)} reviews carry" in sheet
    table = dict(re.findall(r"^\| (\w+) \|.*\| (\d+) \|$", sheet, flags=re.M))
    assert {k: int(v) for k, v in table.items()} == dict(Counter(r["hard_case"] for r in rows))
