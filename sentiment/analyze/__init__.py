"""Data exploration, attention maps and failure analysis of a model, logged to one run.

- stage.py      `run_analyze`: the inputs checked, the model and predictions table found, the parts run
- eda.py        class balance, lengths in words and tokens, vocabulary, tokenizer facts
- attention.py  attention from the classification token, per layer and rolled out, for chosen reviews
- render.py     the attention HTML page (beside the figures in plots.py), excerpts, percentages
- failures.py   errors by length and cue, calibration, the most confident errors, a summary

    sentiment analyze --model-uri models:/imdb-sentiment@champion --data imdb
"""

from sentiment.analyze.stage import (
    PARTS,
    AnalyzeOutcome,
    AnalyzePlan,
    analysis_config,
    parse_parts,
    plan_analyze,
    read_texts,
    report_lines,
    run_analyze,
)

__all__ = [
    "PARTS",
    "AnalyzeOutcome",
    "AnalyzePlan",
    "analysis_config",
    "parse_parts",
    "plan_analyze",
    "read_texts",
    "report_lines",
    "run_analyze",
]
