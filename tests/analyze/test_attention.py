"""analyze.attention: examples chosen from the predictions table, attention extraction and
rollout on real architectures (BERT, DistilBERT, RoBERTa, MiniLM), the HTML page."""

from __future__ import annotations

import html
import re

import numpy as np
import pytest

from sentiment import data as data_mod
from sentiment import evaluate, tokens
from sentiment import model as model_mod
from sentiment.analyze import attention
from sentiment.analyze.render import attention_html
from sentiment.config import ModelConfig


def test_examples_are_chosen_from_the_table(table):
    chosen = attention.select_examples(table, per_group=1)
    assert dict(zip(chosen["group"], chosen["id"])) == {
        "correct_positive": "r9",
        "correct_negative": "r8",
        "false_positive": "r2",
        "false_negative": "r4",
        "least_confident": "r7",
    }
    assert chosen["id"].is_unique


def _roberta_folder(folder) -> str:
    """A tiny random RoBERTa with a byte-level BPE tokenizer trained here on the sample corpus."""
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    texts = data_mod.load_source("sample")["text"].tolist()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts, vocab_size=600, min_frequency=2, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    bpe.post_processor = processors.RobertaProcessing(
        ("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>"))
    )
    tokenizer = RobertaTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
    )
    tokenizer.save_pretrained(folder)
    config = RobertaConfig(
        vocab_size=600,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=1,
    )
    RobertaModel(config).save_pretrained(folder)
    return str(folder)


def _distilbert_folder(folder) -> str:
    """A tiny random DistilBERT with the real uncased WordPiece tokenizer (DistilBERT's vocabulary)."""
    from transformers import DistilBertConfig, DistilBertModel

    tokenizer = model_mod.load_tokenizer("offline-minilm")
    DistilBertModel(
        DistilBertConfig(
            vocab_size=len(tokenizer), n_layers=2, dim=32, n_heads=4, hidden_dim=64, max_position_embeddings=128
        )
    ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module", params=["bert", "distilbert", "roberta", "offline-minilm"])
def encoder(request, tiny_model, tmp_path_factory):
    """(model in its default attention implementation, tokenizer) for each architecture."""
    import torch

    torch.manual_seed(0)
    folder = {
        "bert": lambda: tiny_model,
        "distilbert": lambda: _distilbert_folder(tmp_path_factory.mktemp("distilbert")),
        "roberta": lambda: _roberta_folder(tmp_path_factory.mktemp("roberta")),
        "offline-minilm": lambda: "offline-minilm",
    }[request.param]()
    return model_mod.build_model(ModelConfig(name=folder, dropout=0.1)).eval(), model_mod.load_tokenizer(folder)


LONG = " ".join(["The unwatchable opening drags, but the second half is wonderful."] * 12)


@pytest.mark.parametrize("truncation", ["head", "head_tail"])
def test_attention_rows_are_distributions_and_rollout_has_the_right_shape(encoder, truncation):
    model, tokenizer = encoder
    amap = attention.extract_attention(model, tokenizer, LONG, max_length=48, truncation=truncation)
    layers, heads = len(model_mod.encoder_layers(model)), model.config.num_attention_heads
    length = len(amap.tokens)
    assert length == 48 and amap.truncated
    assert amap.attentions.shape == (layers, heads, length, length)
    np.testing.assert_allclose(
        amap.attentions.sum(-1), 1.0, atol=1e-5
    )  # every layer, head and query: sums to 1 over tokens
    rollout = attention.attention_rollout(amap.attentions)
    assert rollout.shape == (layers, length, length)
    np.testing.assert_allclose(rollout.sum(-1), 1.0, atol=1e-5)
    assert (
        amap.last_layer.shape == (length,)
        and amap.per_layer.shape == (layers, length)
        and amap.rollout.shape == (layers, length)
    )
    # the tokens are the ones training and evaluation feed the model, and so is the prediction
    encoded = tokens.encode([LONG], tokenizer, 48, truncation)
    spans = tokens.encode_with_spans(LONG, tokenizer, 48, truncation)
    assert spans.ids == encoded.input_ids[0] and spans.tokens == amap.tokens
    assert amap.full_length == encoded.full_lengths[0]
    probability, _ = evaluate.predict_probabilities(model, tokenizer, [LONG], 48, truncation)
    assert amap.probability == pytest.approx(float(probability[0]), abs=1e-4)
    assert model.config._attn_implementation == "eager"


def test_word_pieces_keep_their_words_and_the_page_shows_the_whole_review(encoder):
    model, tokenizer = encoder
    text = "An unwatchable, overlong mess; still, the score is gorgeous. " * 3
    for truncation in ("head", "head_tail"):
        amap = attention.extract_attention(model, tokenizer, text, max_length=24, truncation=truncation)
        page = attention_html(amap, "title", {"review": "r"})
        review = re.search(r"<p class='review'>(.*?)</p>", page).group(1)
        shown = html.unescape(re.sub(r"<span class='special'[^>]*>[^<]*</span>", "", review))
        assert re.sub(r"<[^>]+>", "", shown) == data_mod.clean_text(text)  # every character, in order, none twice
        assert "class='cut'" in review  # what truncation removed is marked
        pieces = [t for t in amap.tokens if t.startswith("##")]
        words = set(data_mod.clean_text(text).replace(",", " ").replace(";", " ").replace(".", " ").split())
        assert all(any(p[2:] in w for w in words) for p in pieces)


def test_long_reviews_show_the_most_attended_tokens(encoder):
    model, tokenizer = encoder
    amap = attention.extract_attention(model, tokenizer, LONG, max_length=120)
    columns = attention.display_columns(amap, limit=40)
    assert len(columns) == 40 and list(columns) == sorted(columns)
    assert int(np.argmax(amap.last_layer)) in columns
