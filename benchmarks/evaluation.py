"""The evaluation side of the benchmark: our predict path, transformers.pipeline and padding every review to 512
score the same test reviews from the same trained model, each timed with its peak memory; plus the forward cost per
token at each padded width."""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial

import numpy as np

from benchmarks import measure
from benchmarks.sides import Spec, _prepare, load_splits, sentiment_config


def _timed(fn):
    measure.sync()
    with measure.PeakRss() as rss:
        started = time.perf_counter()
        out = fn()
        measure.sync()
        seconds = time.perf_counter() - started
    return out, seconds, rss.peak_mb


# long function: every evaluation side timed in turn on the same model and reviews, state a split would pass around
def evaluate_all(
    spec: Spec,
    sentiment_model_dir: str,
    trainer_model_dir: str | None,
    bf16_model_dir: str | None = None,
    other_model_dirs: dict[str, str] | None = None,
) -> dict:
    """Predict the test split with our trained model four ways, and every other model once.

    1. `sentiment evaluate`'s path (`evaluate.predict_frame`): cached tokenization (cold: this
       phase's cache starts empty), batches sorted by length, dynamic padding;
    2. the same again with the token cache warm;
    3. `transformers.pipeline("text-classification")`, batched, truncating at max length;
    4. every review padded to 512 tokens, batches in input order.
    All use the same batch size, device, threads, and fp32 on CPU (ours autocasts on CUDA). Then
    with bf16 on both sides: 5. ours with ``--precision bf16`` (CPU only: on CUDA row 1 already
    is bf16), 6. `pipeline` with the model's weights in bf16.
    Trainer's model, our bf16-trained one and ``other_model_dirs`` (name -> folder) are predicted
    like row 1; ``correct`` holds every model's 0/1 per test review, for paired intervals.
    """
    _prepare(spec, "cache-eval")
    import torch
    from transformers import pipeline

    from sentiment import device as device_mod
    from sentiment import evaluate
    from sentiment import model as model_mod

    config = sentiment_config(spec)
    test = load_splits(spec).test
    labels = test["label"].to_numpy()
    texts = test["text"].tolist()
    device = device_mod.pick_device(spec.device)
    tokenizer = model_mod.load_tokenizer(model_mod.resolve_source(spec.model))
    model = model_mod.load_trained(sentiment_model_dir).to(device).eval()
    _warm_up(model, tokenizer, texts, device)
    results: dict[str, dict] = {}

    table, seconds, peak = _timed(lambda: evaluate.predict_frame(model, tokenizer, test, config, device))
    lengths = np.minimum(table["n_tokens"].to_numpy(), spec.max_length)
    sentiment_correct = table["prediction"].to_numpy() == labels
    results["sentiment evaluate"] = _eval_row(
        seconds, peak, (table["prediction"].to_numpy() == labels).mean(), _padded_sorted(lengths, spec.eval_batch_size)
    )
    table, seconds, peak = _timed(lambda: evaluate.predict_frame(model, tokenizer, test, config, device))
    results["sentiment evaluate (token cache warm)"] = _eval_row(
        seconds, peak, (table["prediction"].to_numpy() == labels).mean(), _padded_sorted(lengths, spec.eval_batch_size)
    )

    pipe = pipeline("text-classification", model=model, tokenizer=tokenizer, device=device)
    label_ids = {name: i for i, name in model.config.id2label.items()}
    out, seconds, peak = _timed(
        partial(pipe, texts, batch_size=spec.eval_batch_size, truncation=True, max_length=spec.max_length)
    )
    predicted = np.array([label_ids[row["label"]] for row in out])
    results["transformers.pipeline"] = _eval_row(
        seconds, peak, (predicted == labels).mean(), _padded_in_order(lengths, spec.eval_batch_size)
    )

    predicted, seconds, peak = _timed(lambda: _predict_padded(model, tokenizer, texts, spec, device, width=512))
    results["pad every review to 512"] = _eval_row(seconds, peak, (predicted == labels).mean(), 512 * len(texts))

    # bf16: ours with --precision bf16 (autocast; on CUDA that is already the default above), and
    # pipeline with bf16 weights, the way a user would ask it for bf16 (dtype=torch.bfloat16)
    if device.type == "cpu":
        bf16_config = replace(config, train=replace(config.train, precision="bf16"))
        table, seconds, peak = _timed(lambda: evaluate.predict_frame(model, tokenizer, test, bf16_config, device))
        results["sentiment evaluate --precision bf16"] = _eval_row(
            seconds,
            peak,
            (table["prediction"].to_numpy() == labels).mean(),
            _padded_sorted(lengths, spec.eval_batch_size),
        )
    half = model_mod.load_trained(sentiment_model_dir).to(device=device, dtype=torch.bfloat16).eval()
    _warm_up(half, tokenizer, texts, device)
    pipe = pipeline("text-classification", model=half, tokenizer=tokenizer, device=device)
    out, seconds, peak = _timed(
        partial(pipe, texts, batch_size=spec.eval_batch_size, truncation=True, max_length=spec.max_length)
    )
    predicted = np.array([label_ids[row["label"]] for row in out])
    results["transformers.pipeline, bf16 weights"] = _eval_row(
        seconds, peak, (predicted == labels).mean(), _padded_in_order(lengths, spec.eval_batch_size)
    )
    del half, pipe

    cost = cost_per_token(model, device, [w for w in (128, 256, 512) if w <= 512])
    correct = {"sentiment": sentiment_correct}
    models = {"trainer": trainer_model_dir, "sentiment_bf16": bf16_model_dir, **(other_model_dirs or {})}
    for name, model_dir in models.items():
        if model_dir:  # predicted the same way (fp32 on CPU) for every side
            trained = model_mod.load_trained(model_dir).to(device).eval()
            table = evaluate.predict_frame(trained, tokenizer, test, config, device)
            correct[name] = table["prediction"].to_numpy() == labels
    accuracy = {name: float(hits.mean()) for name, hits in correct.items()}
    return {
        "rows": results,
        "reviews": len(texts),
        "real_tokens": int(lengths.sum()),
        "sentiment_accuracy": results["sentiment evaluate"]["accuracy"],
        "trainer_accuracy": accuracy.get("trainer"),
        "bf16_trained_accuracy": accuracy.get("sentiment_bf16"),
        "accuracy": accuracy,
        "correct": {name: hits.astype(int).tolist() for name, hits in correct.items()},
        "device": str(device),
        "ms_per_1k_tokens": cost,
    }


def cost_per_token(model, device, widths: list[int], batch: int = 16, rounds: int = 3) -> dict[int, float]:
    """Forward milliseconds per 1,000 tokens at each padded width (random ids, full masks). Widths
    take turns for ``rounds`` rounds and the fastest of each is kept, so contention from other
    processes biases no width. If it barely changes with width, time follows computed tokens."""
    import torch

    generator = torch.Generator().manual_seed(0)
    inputs = {w: torch.randint(1000, 2000, (batch, w), generator=generator).to(device) for w in widths}
    best = {w: float("inf") for w in widths}
    with torch.no_grad():
        for w in widths:
            model(input_ids=inputs[w], attention_mask=torch.ones_like(inputs[w]))  # warm-up
        for _ in range(rounds):
            for w in widths:
                measure.sync()
                started = time.perf_counter()
                model(input_ids=inputs[w], attention_mask=torch.ones_like(inputs[w]))
                measure.sync()
                best[w] = min(best[w], time.perf_counter() - started)
    return {w: 1e6 * best[w] / (batch * w) for w in widths}


def _eval_row(seconds: float, peak_mb: float, accuracy: float, padded_tokens: int) -> dict:
    return {
        "seconds": seconds,
        "peak_rss_mb": peak_mb,
        "accuracy": float(accuracy),
        "padded_tokens": int(padded_tokens),
        "peak_gpu_mb": measure.gpu_peak_mb(),
    }


def _padded_sorted(lengths: np.ndarray, batch_size: int) -> int:
    from sentiment.data import sorted_batches

    return sum(len(b) * int(lengths[b].max()) for b in sorted_batches(lengths, batch_size))


def _padded_in_order(lengths: np.ndarray, batch_size: int) -> int:
    return sum(
        len(lengths[i : i + batch_size]) * int(lengths[i : i + batch_size].max())
        for i in range(0, len(lengths), batch_size)
    )


def _warm_up(model, tokenizer, texts: list[str], device) -> None:
    """One small forward pass so no method pays first-call allocation or kernel selection."""
    import torch

    batch = tokenizer(texts[:2], truncation=True, max_length=32, padding=True, return_tensors="pt").to(device)
    with torch.no_grad():
        model(**batch)


def _predict_padded(model, tokenizer, texts: list[str], spec: Spec, device, width: int) -> np.ndarray:
    """Tokenize each batch truncated at max length, pad it to ``width``, predict in input order."""
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(texts), spec.eval_batch_size):
            encoded = tokenizer(
                texts[start : start + spec.eval_batch_size], truncation=True, max_length=spec.max_length
            )
            batch = tokenizer.pad(encoded, padding="max_length", max_length=width, return_tensors="pt").to(device)
            out.append(
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                .logits.argmax(-1)
                .cpu()
                .numpy()
            )
    return np.concatenate(out)
