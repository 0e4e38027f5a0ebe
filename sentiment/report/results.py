"""`make results`: every results document, and the result numbers README shows, rendered from the
evidence store alone (experiments/evidence/: no tracking server, no network, no training).

`experiments/results.yaml` says what goes where: each document's runs, and README's generated
blocks (between ``<!-- results:NAME start ... -->`` and ``<!-- results:NAME end -->``). Rendering
is deterministic, so a clean clone gets byte-identical documents, and `--check` (run by the tests)
fails on any difference and on any run id a document names that the store lacks.

    sentiment evidence render            # rewrite the documents
    sentiment evidence render --check    # exit 1 and say what differs
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from sentiment import stats
from sentiment.errors import UserError
from sentiment.report.document import Section, render_markdown
from sentiment.report.numbers import _pct, _points
from sentiment.report.sections import build, data_name
from sentiment.report.seeds import findings_section, minutes_from_scratch, seed_group_section
from sentiment.tracking import counts as counts_mod
from sentiment.tracking import keys

MANIFEST = Path("experiments") / "results.yaml"
COMMAND = "make results"
SOURCE = (
    f"Rendered by `{COMMAND}` (`sentiment evidence render`) from the evidence store `experiments/evidence/`, "
    "which holds"
)
BLOCK = re.compile(
    r"(<!-- results:(?P<name>[\w-]+) start[^>]*-->\n)(?P<body>.*?)(<!-- results:(?P=name) end -->)", re.S
)
BENCHMARK_ARTIFACT = "benchmark.json"  # a benchmark command's run (benchmarks/record.py), tagged keys.BENCHMARK
# a run id; not a LoggedModel id (`m-` + 32 hex digits: a model, whose weights the store never keeps)
RUN_ID = re.compile(r"(?<![0-9a-f])(?<!m-)[0-9a-f]{32}(?![0-9a-f])")


@dataclass
class Rendered:
    """One file as the store renders it (and the figures beside it, for Markdown documents)."""

    path: Path
    text: str
    figures: dict[str, bytes] = field(default_factory=dict)
    figures_dir: Path | None = None


def render(root: Path = Path("."), manifest: Path = MANIFEST) -> list[Rendered]:
    """Every document of the manifest, rendered from the store (paths relative to ``root``)."""
    from sentiment import tracking

    spec = _load_manifest(root / manifest)
    tracking.use_store(store_of(root, spec))
    out = []
    with tempfile.TemporaryDirectory(prefix="sentiment-results-") as tmp:
        work = Path(tmp)
        for doc in spec.get("documents", []):
            path = Path(doc["output"])
            if doc.get("renderer"):  # a document the repository renders itself (benchmarks/RESULTS.md)
                out.append(Rendered(path, _rendered_by(root, doc)))
                continue
            document = build(
                doc["runs"], doc.get("with_runs", []), work / path.stem, doc.get("title", ""), source=SOURCE
            )
            document.sections += [seed_group_section(group) for group in doc.get("seed_groups", [])]
            if doc.get("findings"):
                document.sections.append(findings_section(doc["findings"]))
            if doc.get("pending"):  # grids whose runs are not in the store yet: their commands, no numbers
                document.sections.append(Section("Not in the store yet", [_pending_list(doc["pending"])]))
            figures = work / "figures" / path.stem
            text = render_markdown(document, figures, f"{path.stem}_figures")
            pngs = {f.name: f.read_bytes() for f in sorted(figures.glob("*.png"))}
            out.append(Rendered(path, text, pngs, path.parent / f"{path.stem}_figures"))
    for name, blocks in spec.get("readme", {}).items():
        current = (root / name).read_text()
        out.append(
            Rendered(Path(name), _fill_blocks(current, {key: _block(key, value) for key, value in blocks.items()}))
        )
    return out


def _rendered_by(root: Path, doc: dict) -> str:
    """``renderer: module:function`` (a module of the repository at ``root``) called with the
    manifest's runs, each with its MLflow run and, for a benchmark command's run (tag
    ``sentiment.benchmark``), its ``benchmark.json``."""
    import importlib
    import json
    import sys

    from sentiment import tracking

    module_name, _, function = doc["renderer"].partition(":")
    if str(root.resolve()) not in sys.path:
        sys.path.insert(0, str(root.resolve()))
    renderer = getattr(importlib.import_module(module_name), function)
    records = []
    for run_id in doc["runs"]:
        run = tracking.get_run(run_id)
        payload = None
        if run.tags.get(keys.BENCHMARK):
            payload = json.loads(tracking.load_run_text(run_id, BENCHMARK_ARTIFACT))
        records.append({"run_id": run_id, "run": run, "payload": payload})
    source = f"{SOURCE} the runs each section names (their commands, commits and model versions with them)."
    return renderer(records, source)


def store_of(root: Path, spec: dict | None = None) -> Path:
    """The evidence store the manifest names (experiments/evidence by default)."""
    spec = spec if spec is not None else _load_manifest(root / MANIFEST)
    return root / spec.get("store", "experiments/evidence")


def _pending_list(pending: list[dict]) -> str:
    """Each pending grid or run: what it is, the command that makes it, how it enters the store."""
    return "\n".join(
        f"- `{item.get('grid') or item['name']}`: {item['what']} Run it with `{item['command']}`, then "
        f"{item.get('then', '`sentiment evidence add PARENT_RUN_ID`')}."
        for item in pending
    )


def _load_manifest(path: Path) -> dict:
    if not path.exists():
        raise UserError(f"{path} does not exist; run from the repository root")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML ({str(exc).splitlines()[0]}); fix it") from None


def _fill_blocks(text: str, blocks: dict[str, str]) -> str:
    missing = set(blocks) - {m.group("name") for m in BLOCK.finditer(text)}
    if missing:
        raise UserError(
            f"README has no generated block {', '.join(sorted(missing))}; add <!-- results:NAME start --> ... <!-- "
            "results:NAME end -->"
        )
    return BLOCK.sub(lambda m: m.group(1) + blocks.get(m.group("name"), m.group("body")) + m.group(4), text)


def write(rendered: list[Rendered], root: Path = Path(".")) -> list[Path]:
    """Write what `render` made; returns the files written."""
    written = []
    for item in rendered:
        (root / item.path).write_text(item.text)
        written.append(item.path)
        if item.figures_dir is not None:
            folder = root / item.figures_dir
            shutil.rmtree(folder, ignore_errors=True)
            if item.figures:
                folder.mkdir(parents=True)
            for name, data in item.figures.items():
                (folder / name).write_bytes(data)
    return written


def check(rendered: list[Rendered], root: Path = Path(".")) -> list[str]:
    """What differs between the committed files and the render, and run ids the store lacks."""
    from sentiment import tracking

    problems = []
    stored = tracking.evidence_run_ids(store_of(root))
    for item in rendered:
        committed = root / item.path
        if not committed.exists() or committed.read_text() != item.text:
            problems.append(f"{item.path} differs from its render (a hand edit or a stale number)")
        if item.figures_dir is not None:
            have = {f.name for f in (root / item.figures_dir).glob("*.png")}
            if have != set(item.figures):
                problems.append(f"{item.figures_dir} holds {sorted(have ^ set(item.figures))} unlike the render")
        lacking = sorted(set(RUN_ID.findall(committed.read_text() if committed.exists() else "")) - stored)
        if lacking:
            problems.append(f"{item.path} names run(s) the evidence store lacks: {', '.join(lacking)}")
    return problems


# ----------------------------------------------------------------------------- README blocks


def _block(name: str, spec) -> str:
    if name == "headline":
        return _headline(spec)
    raise UserError(f"experiments/results.yaml: unknown README block {name!r} (known: headline)")


def _headline(rows: list[dict]) -> str:
    """Per budget: our best model and the baseline beside it, paired on the same test reviews."""
    from sentiment.report.document import _md_table

    return _md_table(pd.DataFrame([_headline_row(row) for row in rows])) + "\n"


def _headline_row(row: dict) -> dict:
    base = _side(row["baseline"])
    out = {"budget": row["budget"], "training reviews": _train_reviews(base)}
    if not row.get("runs"):  # our model for this budget is not in the store yet: say how to make it
        out.update(
            {
                "our model": f"not in the store yet: `{row['command']}`",
                "test accuracy [95% CI]": "",
                "minutes per run": "",
            }
        )
    else:
        ours = _side(row["runs"])
        out.update(
            {
                "training reviews": _train_reviews(ours),
                "our model": f"{ours['name']} ({_seeds(ours)})",
                "test accuracy [95% CI]": _accuracy_cell(ours),
                "minutes per run": _minutes(ours),
            }
        )
    out.update(
        {
            "baseline": base["name"],
            "baseline accuracy [95% CI]": _accuracy_cell(base),
            "baseline minutes": _minutes(base),
        }
    )
    if row.get("runs"):
        out.update(_paired_delta(ours, base))
    else:
        out.update({"Δ points, paired [95% CI]": "", "test reviews": f"{len(base['tables'][0]):,}"})
    out["runs"] = ", ".join(f"`{r}`" for r in row.get("runs", []) + row["baseline"])
    return out


def _paired_delta(ours: dict, base: dict) -> dict:
    """Ours minus the baseline on the same reviews; with several seeds, the wider of the review
    bootstrap and the Student-t interval over the seeds' deltas."""
    by_seed = dict(zip(base["seeds"], base["tables"]))  # a baseline run per seed pairs seed by seed
    pairs = [
        stats.Paired.join(table, by_seed.get(seed, base["tables"][0]))
        for seed, table in zip(ours["seeds"], ours["tables"])
    ]
    delta = stats.compare(pairs)
    low, high = delta["delta_test_accuracy_low"], delta["delta_test_accuracy_high"]
    if len(pairs) > 1:
        low, high, _ = stats.wider_interval((low, high), stats.seed_interval([p.accuracy_delta for p in pairs]))
    return {
        "Δ points, paired [95% CI]": f"{_points(delta['delta_test_accuracy'])} [{_points(low)}, {_points(high)}]",
        "test reviews": f"{delta['paired_reviews'] // len(pairs):,}",
    }


def _side(run_ids: list[str]) -> dict:
    from sentiment import tracking

    runs = [tracking.get_run(run_id) for run_id in run_ids]
    tables = [
        tracking.load_run_table(r.run_id, "predictions/test.parquet", columns=["id", "label", "prediction"])
        for r in runs
    ]
    first = runs[0]
    model = first.params.get("model.name", "?")
    members = [
        first.params[f"combine.member_{i}.family"] for i in range(8) if f"combine.member_{i}.family" in first.params
    ]
    if members:  # a combined model: name its members
        model = f"{' + '.join(members)}, combined"
    name = f"{model} on {data_name(first.params.get('data.source', '?'))}"
    return {"runs": runs, "tables": tables, "name": name, "seeds": [r.params.get("seed", "?") for r in runs]}


def _seeds(side: dict) -> str:
    seeds = [r.params.get("seed", "?") for r in side["runs"]]
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(seeds)}"


def _accuracy_cell(side: dict) -> str:
    runs = side["runs"]
    if len(runs) == 1:
        m = runs[0].metrics
        return f"{_pct(m['test/accuracy'])} [{_pct(m['test/accuracy_ci_low'])}, {_pct(m['test/accuracy_ci_high'])}]"
    values = [r.metrics["test/accuracy"] for r in runs]
    low, high = stats.seed_interval(values)
    return f"{_pct(float(np.mean(values)))} [{_pct(low)}, {_pct(high)}] over seeds"


def _train_reviews(side: dict) -> str:
    counts = {counts_mod.count(r.params, r.metrics, counts_mod.TRAIN_REVIEWS) for r in side["runs"]} - {None}
    return " / ".join(f"{n:,}" for n in sorted(counts)) or "?"


def _minutes(side: dict) -> str:
    minutes = [m for m in (minutes_from_scratch(r) for r in side["runs"]) if m]  # a combined model's members too
    return f"{np.mean(minutes):.1f}" if minutes else "?"
