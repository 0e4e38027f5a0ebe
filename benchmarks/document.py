"""The benchmark's part of benchmarks/RESULTS.md, rendered from its stored payload alone (render_body),
with the setup paragraph and how everything is measured (METHOD)."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

from benchmarks import record
from benchmarks.real_tables import (
    real_section,
)
from benchmarks.tables import (
    ratio_lines,
    tables,
    why_lines,
)


def setup_line(args: argparse.Namespace, results: dict) -> str:
    """The Setup paragraph: the command line's recipe (generated and imdb corpora) and what every
    corpus shares; the real corpus's own settings are in its section."""
    shared = (
        f"seed {args.seed}, {args.threads} torch threads, device {args.device}, "
        f"{'each phase in a fresh process' if args.isolate else 'all phases in one process'}, tracking store: "
        f"{'the one given (--tracking-uri)' if args.tracking_uri else 'a fresh SQLite store'}, shared by both sides."
    )
    real = " The real corpus runs the `cpu` preset's settings instead (its section lists them)."
    if set(results) <= {"real"}:
        only = " The real corpus runs the `cpu` preset's settings (its section lists them)."
        return shared[:1].upper() + shared[1:] + (only if results else "")
    return (
        f"Model `{args.model}`, {args.epochs} epoch(s), batch {args.batch_size}, evaluation batch "
        f"{args.eval_batch_size}, max length {args.max_length} (head truncation), learning rate {args.lr} with "
        f"10% linear warmup then linear decay, weight decay 0.01, clipping 1.0, dropout 0.1, {shared}"
        + (real if "real" in results else "")
    )


# long function: the document's sections in reading order, mostly Markdown text
def render_body(payload: dict, run_id: str | None = None) -> str:
    """The benchmark's part of benchmarks/RESULTS.md, from its stored payload alone."""
    args = SimpleNamespace(**payload["args"])
    results, skipped, load = payload["results"], payload["skipped"], payload["load"]
    where = f"; MLflow run `{run_id}` (experiment `{record.EXPERIMENT}`)" if run_id else ""
    parts = [
        f"Measured by `{payload['command']}` on {payload['when']} in {payload['elapsed_s'] / 60:.1f} minutes "
        f"(one run of the command; every number down to the next command's section comes from it), at commit "
        f"`{payload['commit']}`{where}.",
        "",
        "## Machine",
        "",
        # the commit is the payload's (record.commit); older runs also kept a short one among the facts
        *[f"- {key}: {value}" for key, value in payload["facts"].items() if key != "commit"],
        f"- while it ran: {load['summary']}",
        "",
        (
            "**The machine was shared with other processes during this run**, so absolute times are noisy and the "
            "sides, which ran one after the other, did not see exactly the same contention; read the ratios with that "
            "in mind."
            if load["busy"]
            else "No other process used noticeable CPU while it ran."
        ),
        "",
        "## Setup",
        "",
        setup_line(args, results),
        "",
    ]
    for label, result in results.items():
        if label == "real":
            parts += real_section(result)
            continue
        profile = result["profile"]
        ratios = result["ratios"]
        parts += [
            f"## Corpus: {label}",
            "",
            f"{profile['reviews']:.0f} reviews (train + test) with mean {profile['mean_words']:.0f} words (median "
            f"{profile['median_words']:.0f}, p90 {profile['p90_words']:.0f}), mean {profile['mean_tokens']:.0f} "
            f"tokens, {profile['over_limit_share']:.1%} over 512 tokens. Attention implementation: "
            f"{result['sentiment']['attention']}.",
            "",
            tables(result, ratios),
            "",
            "### Ratios",
            "",
            ratio_lines(ratios),
            "",
            why_lines(result, ratios),
            "",
            f"MLflow time by function, ours: {result['sentiment']['mlflow_top']}; Trainer: "
            f"{result['trainer']['mlflow_top'] or 'none'}. Our whole `sentiment train` stage (data, model, training, "
            f"logging the model) took {result['sentiment']['stage_s']:.1f} s, "
            f"{result['sentiment']['stage_mlflow_s']:.1f} s of it in MLflow (mostly logging the servable model once, "
            "after training).",
            "",
        ]
    for label, reason in skipped.items():
        parts += [f"## Corpus: {label}", "", f"Skipped: {reason}.", ""]
    parts += [METHOD]
    return "\n".join(parts)


METHOD = """## How it is measured

- **Same everything**: both training sides get the model built by `sentiment.model.build_model` under the same seed
  (identical fresh classification head), the same splits (`sentiment.data.load_splits`), batch size, epochs, max length,
  learning-rate schedule (linear warmup and decay), weight decay, clipping, seed, `torch.set_num_threads`, and the same
  tracking store. On the generated corpus ours uses no layer-wise learning-rate decay (Trainer has none); on real
  reviews ours runs the `cpu` preset's layer decay, which Trainer lacks (see the real corpus below).
- **Trainer** keeps its defaults: random sampling, `DataCollatorWithPadding` (each batch padded to its longest review),
  fused AdamW, logging and checkpointing every 500 steps, plus `report_to=["mlflow"]`; its progress bar is off.
  Its tokenization (`datasets.map`) is not timed, and neither is ours (cached, see the evaluation rows).
- **Training wall time**: Trainer, `trainer.train()`; ours, `fit()` (the loop, per-epoch validation, checkpoint saves \
and
  their uploads to MLflow, all metric logging) plus the MLflow calls made before it (run start, params, datasets, tags).
  Samples/s and tokens/s divide by it (real, unpadded tokens; the padding column is the share of computed tokens that
  were padding). Trainer validates nothing by default, so the headline ratio excludes the time of our validation
  pass; the ratio with it included is shown too.
- **bf16 on CPU** (CPU runs only; on CUDA our default already is bf16): a third training side, `sentiment train
  --precision bf16` (autocast to bfloat16), same recipe, its model evaluated like the others. In evaluation, ours with
  `--precision bf16` and `pipeline` with the model's weights cast to bf16. The fp32 rows are what the targets compare;
  the bf16 rows show how far cheaper arithmetic goes, and what it does to accuracy.
- **Real corpus** (`--data real`, and in `auto` when it has a source): the shared parquet (`--real-data`), else the
  Hub's `imdb`. Our side runs the `cpu` preset's settings, read from `PRESETS["cpu"]` when the benchmark runs, at the
  preset's precision (`native`: bf16 where the CPU runs it natively) and in fp32. Trainer runs the same batch, epochs,
  learning rate, warmup, weight decay, clipping and dropout with its defaults (fp32) and with its own mixed precision
  (`bf16=True`: autocast), without layer decay (it has none). It trains on our token ids (`sentiment.tokens.encode`,
  head+tail) rather than its tokenizer's head truncation, so both sides see identical inputs. The headline divides the
  preset side's samples/s by Trainer's defaults'; the "which change bought what" rows divide the sides pairwise, so
  the headline is the product of the loop's factor and bf16's. `pipeline` truncates at the head (it has no head+tail).
- **Time to accuracy** (real corpus): Trainer's (defaults, fp32) training wall time is the budget. Our side trains at
  the preset for one epoch on as many training reviews as fit in it at the samples/s its preset side measured, one
  validation pass deducted (a stratified seeded sample, capped by the reviews available); both models are tested on
  the same reviews, with 95% percentile bootstrap intervals (1,000 resamples; the difference paired review by review).
- **Accuracy**: every trained model is evaluated on the same test split by the same code (`evaluate.predict_frame`,
  fp32 on CPU).
- **Evaluation**: the model trained by `sentiment`, on the test split, in one process after a warm-up forward pass:
  our `predict_frame` (what `sentiment evaluate` runs: cached tokenization with an empty cache, batches sorted by
  length, dynamic padding), the same with the cache warm, `pipeline("text-classification")` with the same batch size and
  truncation, batches in input order padded to 512 tokens, then the two bf16 rows. Times include tokenization.
- **MLflow share**: the public `mlflow` functions (`log_metrics`, `log_params`, `log_artifact(s)`, `start_run`,
  `end_run`, `set_tags`, `log_input`, `flush_async_logging`, `pyfunc.log_model`, `data.from_pandas`, ...) are wrapped \
for
  the duration of each training phase, and the wall time of the outermost calls is summed. Both our tracker and
  Trainer's `MLflowCallback` call MLflow through these functions, so one instrument measures both. Asynchronous
  logging returns at once; the CPU time of MLflow's background threads (async logging, system metrics) during training
  is read from the OS and shown beside it, and the target is judged on the sum.
- **Memory**: resident memory sampled every 50 ms during each phase (each phase in its own process by default); GPU
  memory from `torch.cuda.max_memory_allocated` on CUDA.
"""
