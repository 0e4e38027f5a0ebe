"""Text for people from the analyses: the attention page (a review with its word pieces shaded
by weight; pure: an AttentionMap in, HTML out, beside the figures in plots.py), excerpts and
percentages.

    sentiment analyze --model-uri models:/imdb-sentiment@champion --only attention --texts mine.txt
"""

from __future__ import annotations

import html

import numpy as np

EXCERPT_CHARS = 300


def attention_html(amap, title: str, facts: dict[str, str]) -> str:
    """A self-contained page: the review twice, word pieces shaded by last-layer attention and by
    rollout; what truncation removed is greyed out; hover a piece for its weight."""
    sections = []
    for name, weights in (
        ("Last layer: attention from the classification token (mean over heads)", amap.last_layer),
        ("Attention rollout through all layers", amap.rollout[-1]),
    ):
        sections.append(f"<h2>{html.escape(name)}</h2><p class='review'>{_highlighted(amap, weights)}</p>")
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts.items())
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_PAGE_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><table>{rows}</table>"
        "<p class='note'>Shading: the weight divided by the largest weight of a word piece in the review (white = 0). "
        "Word pieces of one word stay joined; hover a piece for its token and weight.</p>"
        f"{''.join(sections)}</body></html>"
    )


_PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;line-height:1.9;color:#222}"
    "table{border-collapse:collapse;margin-bottom:1rem}th,td{text-align:left;padding:.1rem .8rem;border-bottom:1px "
    "solid #ddd}"
    ".review span.t{border-radius:3px;padding:.1rem 0}.special{font-size:.75em;color:#555;border:1px solid "
    "#aaa;border-radius:3px;padding:0 .2rem;margin:0 .2rem}"
    ".cut{color:#999}.note{color:#555;font-size:.9em}"
)


def _highlighted(amap, weights: np.ndarray) -> str:
    content = [j for j, p in enumerate(amap.positions) if p >= 0]
    # Scale by the review's words: [CLS] keeps much of the rollout through the residual path.
    scale = float(weights[content].max() if content else weights.max()) or 1.0

    def shade(j: int, inner: str, css: str) -> str:
        tip = html.escape(f"#{j} {amap.tokens[j]}: {weights[j]:.4f}", quote=True)
        return (
            f"<span class='{css}' title='{tip}' "
            f"style='background:rgba(230,85,13,{min(weights[j] / scale, 1.0):.3f})'>{inner}</span>"
        )

    first = content[0] if content else len(amap.tokens)
    last = content[-1] if content else len(amap.tokens) - 1
    out = [shade(j, html.escape(amap.tokens[j]), "special") for j in range(first)]
    prev_end = 0
    for k, j in enumerate(content):
        start, end = amap.spans[j]
        gap = html.escape(amap.text[prev_end:start])
        cut = k > 0 and amap.positions[j] != amap.positions[content[k - 1]] + 1  # head_tail cut the middle
        out.append(f"<span class='cut' title='not seen by the model'>{gap}</span>" if cut else gap)
        out.append(shade(j, html.escape(amap.text[start:end]), "t"))
        prev_end = end
    tail = html.escape(amap.text[prev_end:])
    out.append(
        f"<span class='cut' title='not seen by the model'>{tail}</span>" if amap.truncated and tail.strip() else tail
    )
    out += [shade(j, html.escape(amap.tokens[j]), "special") for j in range(last + 1, len(amap.tokens))]
    return "".join(out)


def excerpt(text: str, chars: int = EXCERPT_CHARS) -> str:
    """The text, or its first ``chars`` characters cut at a word, with " ..." when cut."""
    return text if len(text) <= chars else text[:chars].rsplit(" ", 1)[0] + " ..."


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
