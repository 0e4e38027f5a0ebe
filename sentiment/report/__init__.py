"""Results documents rendered from what MLflow holds, never typed in.

For an ablation parent: the summary (mean +- std over seeds, delta with its 95% interval, McNemar
with Holm), accuracies published elsewhere beside ours with a generated verdict per row, the
comparison figure, a learning curve when the variants differ only in training reviews, every
child's run id, and the grid. For a training run: its metrics with intervals, the confusion
matrix counted from its predictions table, and its figures. Markdown or self-contained HTML.

    sentiment report --run PARENT_RUN_ID --output experiments/RESULTS.md
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from sentiment.errors import UserError
from sentiment.report.document import Code, Document, Image, Section, render_html, render_markdown
from sentiment.report.sections import build
from sentiment.stats import wilson_interval

FORMATS = ("md", "html")

__all__ = [
    "FORMATS",
    "Code",
    "Document",
    "Image",
    "Section",
    "build",
    "render_html",
    "render_markdown",
    "run_report",
    "wilson_interval",
]


def run_report(
    run_ids: list[str], with_runs: list[str], fmt: str, output: Path, title: str = "", log: bool = True
) -> Path:
    """The report stage: build, write ``output`` (Markdown figures in ``<stem>_figures/`` beside
    it), and log the document to the first run as ``report.md`` / ``report.html``."""
    from sentiment import tracking

    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not run_ids:
        raise UserError("pass at least one --run (an ablation parent or a training run id)")
    tracking.connect()
    with tempfile.TemporaryDirectory(prefix="sentiment-report-") as tmp:
        work = Path(tmp)
        document = build(run_ids, with_runs, work, title)
        output.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "md":
            figures = output.parent / f"{output.stem}_figures"
            shutil.rmtree(figures, ignore_errors=True)
            output.write_text(render_markdown(document, figures, figures.name))
            if log:  # the same document inside the run, its figures in report_figures/ beside it
                logged = work / "logged"
                logged.mkdir()
                (logged / "report.md").write_text(
                    render_markdown(document, logged / "report_figures", "report_figures")
                )
                tracking.log_files_to_run(
                    run_ids[0],
                    [("", logged / "report.md")]
                    + [("report_figures", f) for f in sorted((logged / "report_figures").glob("*.png"))],
                )
        else:
            text = render_html(document)
            output.write_text(text)
            if log:
                (work / "report.html").write_text(text)
                tracking.log_files_to_run(run_ids[0], [("", work / "report.html")])
    return output
