"""Attention-head importance and masking (`keep_heads`): score every head of a pretrained
encoder on a few training reviews (Michel et al. 2019) and zero all but the k best per layer.

    sentiment train --preset quick --keep-heads 4
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sentiment.device import pick_device
from sentiment.errors import UserError
from sentiment.model import attention_projections, embeddings, encoder_layers

HEAD_SCORING_REVIEWS = 64  # training reviews used to score heads (Michel et al. 2019 use a few batches)
HEAD_PROBE_EPOCHS = 5  # passes fitting the fresh classification head before scoring


def mask_heads(
    model: nn.Module, texts: list[str], labels, tokenizer, config, device: torch.device | None = None
) -> dict[int, list[int]]:
    """Keep the ``config.model.keep_heads`` most important heads per layer; zero the others.

    transformers 5 removed ``prune_heads`` (and ``head_mask``), so heads are masked, not cut out:
    a masked head's query, key and value rows and its columns of the output projection are set
    to zero. Its output is then exactly zero and so are all their gradients, so they stay zero
    through training and in the saved model (same function as pruning, no speed-up). The
    masked heads are recorded in ``model.config.sentiment_masked_heads`` (config.json).

    Importance is Michel et al. (2019): the expected absolute gradient of the loss with respect
    to a gate on each head's output, over a few training reviews. The fresh classification head
    is fitted for a few passes first (encoder frozen, then reset) so the gradient reflects the task.

    Args:
        texts, labels: training reviews and their 0/1 labels (a seeded sample is scored).
        config: the run's Config (keep_heads, max_length, truncation, batch size, seed).
        device: where to score the heads (default: ``config.train.device``).
    Returns:
        layer index -> masked head indices ({} when keep_heads is 0).
    """
    keep = config.model.keep_heads
    if not keep:
        return {}
    heads = model.config.num_attention_heads
    if keep > heads:
        raise UserError(f"model.keep_heads {keep} is above the model's {heads} heads per layer; use 1..{heads}")
    if keep == heads:
        return {}  # nothing to mask: the same run as keep_heads 0
    device = device or pick_device(config.train.device)
    model.to(device)
    batches = [
        {k: v.to(device) for k, v in batch.items()} for batch in _scoring_batches(texts, labels, tokenizer, config)
    ]
    importance = head_importance(model, batches)  # (layers, heads)
    masked = {i: sorted(int(h) for h in row.argsort(descending=True)[keep:]) for i, row in enumerate(importance)}
    zero_heads(model, masked)
    return {i: h for i, h in masked.items() if h}


def _scoring_batches(texts, labels, tokenizer, config) -> list[dict[str, torch.Tensor]]:
    from sentiment import data as data_mod
    from sentiment import tokens

    rng = np.random.default_rng(config.seed)
    pick = rng.permutation(len(texts))[:HEAD_SCORING_REVIEWS]
    encoded = tokens.encode([texts[i] for i in pick], tokenizer, config.data.max_length, config.data.truncation)
    collate = data_mod.make_collate(tokenizer.pad_token_id)
    size = config.train.batch_size
    items = [(encoded.input_ids[j], int(labels[pick[j]])) for j in range(len(pick))]
    return [collate(items[i : i + size]) for i in range(0, len(items), size)]


def head_importance(model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """Michel et al. (2019) head importance, shape (layers, heads), on CPU.

    The gate gradient of head h for one review is sum over positions and head dims of
    (head output * gradient at the output projection's input); its absolute value is summed.
    """
    import torch.nn.functional as F

    layers = encoder_layers(model)
    heads = model.config.num_attention_heads
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    head_params = _head_parameters(model)
    initial_head = {id(p): p.detach().clone() for p in head_params}
    was_training = model.training
    model.eval()  # no dropout: scores depend on the weights and the reviews only
    try:
        _fit_probe(model, batches, head_params)
        for param in model.parameters():
            param.requires_grad_(True)
        scores = torch.zeros(len(layers), heads)

        def capture(index):
            def hook(module, inputs):
                x = inputs[0]  # (batch, tokens, heads * head_dim): the heads' outputs, concatenated

                def gate_gradient(grad):  # per review and head: sum of output * gradient
                    per_review = (x.detach() * grad).unflatten(-1, (heads, -1)).sum((1, 3))  # (batch, heads)
                    scores[index].add_(per_review.abs().sum(0).float().cpu())

                x.register_hook(gate_gradient)

            return hook

        handles = [
            attention_projections(layer)[3].register_forward_pre_hook(capture(i)) for i, layer in enumerate(layers)
        ]
        try:
            for batch in batches:
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                F.cross_entropy(logits, batch["labels"]).backward()
                model.zero_grad(set_to_none=True)
        finally:
            for handle in handles:
                handle.remove()
    finally:
        with torch.no_grad():
            for param in head_params:
                param.copy_(initial_head[id(param)])
        for name, param in model.named_parameters():
            param.requires_grad_(flags[name])
        model.train(was_training)
    return scores


def _head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The classification head's parameters: everything outside the embeddings and encoder layers."""
    body = {id(p) for p in embeddings(model).parameters()} | {id(p) for p in encoder_layers(model).parameters()}
    return [p for p in model.parameters() if id(p) not in body]


def _fit_probe(model: nn.Module, batches, head_params: list[nn.Parameter]) -> None:
    """A few Adam steps on the classification head only (a linear probe of the frozen encoder)."""
    import torch.nn.functional as F

    for param in model.parameters():
        param.requires_grad_(False)
    for param in head_params:
        param.requires_grad_(True)
    optimizer = torch.optim.Adam(head_params, lr=1e-3)
    for _ in range(HEAD_PROBE_EPOCHS):
        for batch in batches:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            F.cross_entropy(logits, batch["labels"]).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def zero_heads(model: nn.Module, masked: dict[int, list[int]]) -> None:
    """Zero the query/key/value rows and output-projection columns of ``masked`` heads."""
    layers = encoder_layers(model)
    heads = model.config.num_attention_heads
    for i, head_list in masked.items():
        query, key, value, output = attention_projections(layers[i])
        size = query.out_features // heads
        for h in head_list:
            rows = slice(h * size, (h + 1) * size)
            for proj in (query, key, value):
                proj.weight[rows] = 0
                proj.bias[rows] = 0
            output.weight[:, rows] = 0
    model.config.sentiment_masked_heads = {str(i): h for i, h in masked.items() if h}
