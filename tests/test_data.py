"""Unit tests for sentiment.data: sources, splits, encoding and batching (no server, no network)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from sentiment import data as data_mod
from sentiment.config import DataConfig
from sentiment.data import (
    LengthGroupedBatches,
    clean_text,
    load_source,
    make_collate,
    make_splits,
    sorted_batches,
)
from sentiment.errors import UserError

# ----------------------------------------------------------------------------- helpers


def write_csv(path, header, rows):
    pd.DataFrame(rows, columns=header).to_csv(path, index=False)
    return path


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- sources


def test_clean_text_removes_html_breaks_and_squeezes_whitespace():
    assert clean_text("Great film.<br /><br />Loved it") == "Great film. Loved it"
    assert clean_text("a<br>b<BR/>c<br  />d") == "a b c d"
    assert clean_text("  many   spaces\n\tand tabs ") == "many spaces and tabs"


def test_csv_review_sentiment_columns_any_case(tmp_path):
    path = write_csv(
        tmp_path / "reviews.csv",
        ["review", "sentiment"],
        [
            ["Loved it.<br />Superb acting", "positive"],
            ["Dull and boring", "NEGATIVE"],
            ["A masterpiece", "Positive"],
            ["Waste of time", " negative "],
        ],
    )
    frame = load_source(str(path))
    assert list(frame.columns) == ["id", "text", "label", "split"]
    assert frame["label"].tolist() == [1, 0, 1, 0]
    assert frame["text"].tolist() == ["Loved it. Superb acting", "Dull and boring", "A masterpiece", "Waste of time"]
    assert frame["id"].tolist() == ["0", "1", "2", "3"]
    assert set(frame["split"]) == {""}


def test_csv_text_label_zero_one(tmp_path):
    path = write_csv(tmp_path / "reviews.csv", ["text", "label"], [["bad", 0], ["good", 1], ["fine", 1]])
    frame = load_source(str(path))
    assert frame["label"].tolist() == [0, 1, 1]
    assert frame["text"].tolist() == ["bad", "good", "fine"]


def test_csv_keeps_id_and_split_columns(tmp_path):
    path = write_csv(
        tmp_path / "reviews.csv",
        ["id", "text", "label", "split"],
        [["r1", "bad", "neg", "train"], ["r2", "good", "pos", "test"], ["r3", "ok", "pos", "train"]],
    )
    frame = load_source(str(path))
    assert frame["id"].tolist() == ["r1", "r2", "r3"]
    assert frame["split"].tolist() == ["train", "test", "train"]
    assert frame["label"].tolist() == [0, 1, 1]


def test_jsonl_source(tmp_path):
    path = write_jsonl(
        tmp_path / "reviews.jsonl",
        [
            {"id": "x1", "text": "great<br/>film", "label": "positive", "extra": 3},
            {"id": "x2", "text": "awful film", "label": "negative", "extra": 4},
        ],
    )
    frame = load_source(str(path))
    assert frame["id"].tolist() == ["x1", "x2"]
    assert frame["text"].tolist() == ["great film", "awful film"]
    assert frame["label"].tolist() == [1, 0]


def test_parquet_source(tmp_path):
    path = tmp_path / "reviews.parquet"
    pd.DataFrame({"review": ["nice", "awful", "brilliant"], "label": [1, 0, 1]}).to_parquet(path)
    frame = load_source(str(path))
    assert frame["text"].tolist() == ["nice", "awful", "brilliant"]
    assert frame["label"].tolist() == [1, 0, 1]
    assert frame["label"].dtype.kind == "i"


def test_bundled_sample_is_large_balanced_and_sized():
    frame = load_source("sample")
    assert len(frame) >= 300
    counts = frame["label"].value_counts()
    assert set(counts.index) == {0, 1}
    assert counts[0] == counts[1]
    words = frame["text"].str.split().str.len()
    assert words.min() >= 15 and words.max() <= 400
    assert frame["id"].is_unique


def test_aclimdb_folder_keeps_test_split(tmp_path):
    root = tmp_path / "aclImdb"
    texts = {}
    for split in ("train", "test"):
        for label in ("pos", "neg"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(3):
                text = f"{split} {label} review {i}<br />second line"
                (folder / f"{i}_{7 if label == 'pos' else 2}.txt").write_text(text, encoding="utf-8")
                texts[f"{split}/{label}/{i}_{7 if label == 'pos' else 2}"] = text
    # unsupervised reviews must be ignored
    (root / "train" / "unsup").mkdir()
    (root / "train" / "unsup" / "0_0.txt").write_text("no label", encoding="utf-8")

    frame = load_source(str(root))
    assert len(frame) == 12
    assert (frame["split"] == "test").sum() == 6 and (frame["split"] == "train").sum() == 6
    for row in frame.itertuples():
        split, label, _ = row.id.split("/")
        assert row.split == split
        assert row.label == (1 if label == "pos" else 0)
        assert row.text == clean_text(texts[row.id])
        assert "<br" not in row.text

    splits = make_splits(frame, DataConfig(val_fraction=0.5), seed=0)
    assert sorted(splits.test["id"]) == sorted(i for i in frame["id"] if i.startswith("test/"))
    assert all(i.startswith("train/") for i in [*splits.train["id"], *splits.val["id"]])


# ----------------------------------------------------------------------------- source errors


def test_missing_path_is_user_error(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(UserError, match="nope.csv") as info:
        load_source(str(missing))
    assert "existing" in str(info.value)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "reviews.txt"
    path.write_text("text,label\nhi,1\n")
    with pytest.raises(UserError, match=r"unsupported file type '\.txt'"):
        load_source(str(path))


def test_empty_aclimdb_folder(tmp_path):
    (tmp_path / "aclImdb" / "train" / "pos").mkdir(parents=True)
    with pytest.raises(UserError, match="has no reviews"):
        load_source(str(tmp_path / "aclImdb"))


def test_csv_without_label_column(tmp_path):
    path = write_csv(tmp_path / "r.csv", ["review", "stars"], [["good", 5], ["bad", 1]])
    with pytest.raises(UserError, match=r"label column \(.label. or .sentiment.\)") as info:
        load_source(str(path))
    assert "stars" in str(info.value)  # lists the columns it found


def test_csv_without_text_column(tmp_path):
    path = write_csv(tmp_path / "r.csv", ["body", "label"], [["good", 1], ["bad", 0]])
    with pytest.raises(UserError, match="text column"):
        load_source(str(path))


def test_unknown_label_value_names_row(tmp_path):
    path = write_csv(
        tmp_path / "r.csv",
        ["text", "sentiment"],
        [["good", "positive"], ["bad", "negative"], ["so-so", "meh"], ["fine", "positive"]],
    )
    with pytest.raises(UserError) as info:
        load_source(str(path))
    message = str(info.value)
    assert "row 3" in message and "'meh'" in message


def test_three_classes_rejected(tmp_path):
    path = write_csv(
        tmp_path / "r.csv",
        ["text", "label"],
        [["good", "positive"], ["bad", "negative"], ["so-so", "neutral"]],
    )
    with pytest.raises(UserError) as info:
        load_source(str(path))
    message = str(info.value)
    assert "two classes" in message and "3 distinct values" in message and "neutral" in message


def test_numeric_three_classes_rejected(tmp_path):
    path = write_csv(tmp_path / "r.csv", ["text", "label"], [["a", 0], ["b", 1], ["c", 2]])
    with pytest.raises(UserError, match="row 3"):
        load_source(str(path))


def test_empty_text_names_row(tmp_path):
    path = write_csv(
        tmp_path / "r.csv",
        ["text", "label"],
        [["good", 1], ["bad", 0], ["", 1], ["<br />  ", 0]],
    )
    with pytest.raises(UserError) as info:
        load_source(str(path))
    message = str(info.value)
    assert "row 3" in message and "empty text" in message and "2 such rows" in message


def test_only_one_class(tmp_path):
    path = write_csv(tmp_path / "r.csv", ["text", "label"], [["good", 1], ["great", 1]])
    with pytest.raises(UserError, match=r"only one class \(positive\)"):
        load_source(str(path))


def test_jsonl_invalid_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"text": "good", "label": 1}\n\n{"text": "bad", "label": 0\n', encoding="utf-8")
    with pytest.raises(UserError, match="line 3 is not valid JSON"):
        load_source(str(path))


def test_jsonl_non_object_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"text": "good", "label": 1}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(UserError, match="line 2 is not a JSON object"):
        load_source(str(path))


def test_header_only_csv_has_no_rows(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("text,label\n", encoding="utf-8")
    with pytest.raises(UserError, match="has no rows"):
        load_source(str(path))


def test_zero_byte_csv_cannot_be_read(tmp_path):
    path = tmp_path / "r.csv"
    path.write_bytes(b"")
    with pytest.raises(UserError, match="cannot read"):
        load_source(str(path))


def test_blank_jsonl_has_no_records(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(UserError, match="no records"):
        load_source(str(path))


def test_parquet_missing_text_names_row(tmp_path):
    path = tmp_path / "r.parquet"
    pd.DataFrame({"text": ["good", None, "bad"], "label": [1, 0, 0]}).to_parquet(path)
    with pytest.raises(UserError, match="row 2 has an empty text"):
        load_source(str(path))


# ----------------------------------------------------------------------------- splits


@pytest.fixture(scope="module")
def imdb_like():
    """25,000 train + 25,000 test rows, balanced, with the source's own split column."""
    rows = []
    for split in ("train", "test"):
        n = 25_000
        rows.append(
            pd.DataFrame(
                {
                    "id": [f"{split}/{i}" for i in range(n)],
                    "text": [f"review {i}" for i in range(n)],
                    "label": np.tile([0, 1], n // 2),
                    "split": split,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def test_imdb_default_sizes_and_stratification(imdb_like):
    splits = make_splits(imdb_like, DataConfig(), seed=42, source="imdb")
    assert splits.sizes() == {"train": 18_750, "val": 6_250, "test": 25_000}
    assert splits.source == "imdb"
    assert splits.val["label"].value_counts().to_dict() == {0: 3125, 1: 3125}
    assert splits.train["label"].value_counts().to_dict() == {0: 9375, 1: 9375}
    assert set(splits.test["id"]) == {f"test/{i}" for i in range(25_000)}
    for part in (splits.train, splits.val, splits.test):
        assert list(part.columns) == ["id", "text", "label"]
        assert list(part.index) == list(range(len(part)))


def test_splits_are_seeded_and_disjoint(imdb_like):
    config = DataConfig()
    a = make_splits(imdb_like, config, seed=1)
    b = make_splits(imdb_like, config, seed=1)
    c = make_splits(imdb_like, config, seed=2)
    assert a.train["id"].tolist() == b.train["id"].tolist()
    assert a.val["id"].tolist() == b.val["id"].tolist()
    assert a.val["id"].tolist() != c.val["id"].tolist()
    assert set(a.val["id"]) != set(c.val["id"])
    ids = [set(a.train["id"]), set(a.val["id"]), set(a.test["id"])]
    assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    assert sum(map(len, ids)) == len(imdb_like)
    # texts travel with their ids
    row = a.val.iloc[0]
    assert row["text"] == f"review {row['id'].split('/')[1]}"


def test_source_without_test_split():
    n = 1000
    frame = pd.DataFrame(
        {"id": [str(i) for i in range(n)], "text": ["t"] * n, "label": np.tile([0, 1], n // 2), "split": [""] * n}
    )
    splits = make_splits(frame, DataConfig(test_fraction=0.2, val_fraction=0.2), seed=0)
    assert splits.sizes() == {"train": 640, "val": 160, "test": 200}
    assert splits.test["label"].value_counts().to_dict() == {0: 100, 1: 100}
    assert splits.val["label"].value_counts().to_dict() == {0: 80, 1: 80}
    all_ids = [*splits.train["id"], *splits.val["id"], *splits.test["id"]]
    assert len(all_ids) == len(set(all_ids)) == n


def test_train_fraction_subsample_stays_stratified(imdb_like):
    full = make_splits(imdb_like, DataConfig(), seed=3)
    small = make_splits(imdb_like, DataConfig(train_fraction=0.1), seed=3)
    assert len(small.train) == 1875
    counts = small.train["label"].value_counts()
    assert abs(counts[0] - counts[1]) <= 1
    assert set(small.train["id"]) <= set(full.train["id"])
    # val and test are unaffected by the training subsample
    assert small.val["id"].tolist() == full.val["id"].tolist()
    assert len(small.test) == 25_000


def test_size_samples_are_stratified_subsets_of_their_splits(imdb_like):
    full = make_splits(imdb_like, DataConfig(), seed=3)
    small = make_splits(imdb_like, DataConfig(train_size=1000, val_size=500, test_size=5000), seed=3)
    assert small.sizes() == {"train": 1000, "val": 500, "test": 5000}
    for name in ("train", "val", "test"):
        part, whole = getattr(small, name), getattr(full, name)
        assert set(part["id"]) <= set(whole["id"])
        counts = part["label"].value_counts()
        assert abs(counts[0] - counts[1]) <= 1, name
        # kept in the split's own order
        position = {rid: i for i, rid in enumerate(whole["id"])}
        assert [position[rid] for rid in part["id"]] == sorted(position[rid] for rid in part["id"])


def test_split_seed_gives_every_run_seed_the_same_reviews(imdb_like):
    config = DataConfig(train_size=800, val_size=300, test_size=2000, split_seed=0)
    a, b = make_splits(imdb_like, config, seed=1), make_splits(imdb_like, config, seed=2)
    for name in ("train", "val", "test"):
        assert getattr(a, name)["id"].tolist() == getattr(b, name)["id"].tolist(), name
    # without it the run's seed draws the samples, so they differ between seeds
    c = make_splits(imdb_like, DataConfig(train_size=800, test_size=2000), seed=1)
    d = make_splits(imdb_like, DataConfig(train_size=800, test_size=2000), seed=2)
    assert c.test["id"].tolist() != d.test["id"].tolist()
    assert c.train["id"].tolist() != d.train["id"].tolist()
    # and split_seed k is the same draw as run seed k
    e = make_splits(imdb_like, DataConfig(train_size=800, test_size=2000, split_seed=1), seed=7)
    assert e.test["id"].tolist() == c.test["id"].tolist() and e.train["id"].tolist() == c.train["id"].tolist()


def test_size_above_the_split_is_user_error(imdb_like):
    with pytest.raises(UserError, match=r"data.test_size is 30000 but the test split has only 25000 reviews"):
        make_splits(imdb_like, DataConfig(test_size=30_000), seed=0)


def test_too_small_hold_out_is_user_error():
    frame = pd.DataFrame({"id": list("abcd"), "text": list("abcd"), "label": [0, 1, 0, 1], "split": [""] * 4})
    with pytest.raises(UserError, match="too few"):
        make_splits(frame, DataConfig(test_fraction=0.1), seed=0)


def test_class_with_one_review_is_user_error():
    n = 20
    frame = pd.DataFrame(
        {"id": [str(i) for i in range(n)], "text": ["t"] * n, "label": [1] * (n - 1) + [0], "split": [""] * n}
    )
    with pytest.raises(UserError, match="a class has only 1 review"):
        make_splits(frame, DataConfig(test_fraction=0.2, val_fraction=0.2), seed=0)


def test_load_splits_on_sample():
    splits = data_mod.load_splits(DataConfig(source="sample", val_fraction=0.2, test_fraction=0.2), seed=42)
    sizes = splits.sizes()
    assert sum(sizes.values()) == len(load_source("sample"))
    assert sizes["test"] == 78 and sizes["val"] == 62
    assert splits.source == "sample"


def test_select_split():
    splits = data_mod.Splits(
        train=pd.DataFrame({"id": ["a"], "text": ["x"], "label": [0]}),
        val=pd.DataFrame({"id": ["b"], "text": ["y"], "label": [1]}),
        test=pd.DataFrame({"id": ["c"], "text": ["z"], "label": [0]}),
        source="s",
    )
    assert data_mod.select_split(splits, "val")["id"].tolist() == ["b"]
    assert data_mod.select_split(splits, "all")["id"].tolist() == ["a", "b", "c"]
    with pytest.raises(UserError, match="split must be one of"):
        data_mod.select_split(splits, "dev")


# ----------------------------------------------------------------------------- batching


def padded_tokens(batches, lengths):
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)


def test_length_grouped_batches_cover_every_index_once():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 500, size=1003)
    sampler = LengthGroupedBatches(lengths, batch_size=16, seed=7, window=10)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(lengths)))
        assert all(1 <= len(b) <= 16 for b in batches)
        assert len(batches) == len(sampler) == 63


def test_length_grouped_batches_order_depends_on_seed_and_epoch():
    lengths = np.random.default_rng(1).integers(5, 500, size=400)
    sampler = LengthGroupedBatches(lengths, batch_size=8, seed=3)
    sampler.set_epoch(0)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch0 != epoch1
    same = LengthGroupedBatches(lengths, batch_size=8, seed=3)
    same.set_epoch(1)
    assert list(same) == epoch1
    same.set_epoch(0)
    assert list(same) == epoch0
    other = LengthGroupedBatches(lengths, batch_size=8, seed=4)
    other.set_epoch(1)
    assert list(other) != epoch1


def test_length_grouping_reduces_padding_on_skewed_lengths():
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(mean=5.0, sigma=0.8, size=4000).astype(int), 8, 512)
    batch_size = 16
    sampler = LengthGroupedBatches(lengths, batch_size=batch_size, seed=0)
    grouped = padded_tokens(list(sampler), lengths)
    order = rng.permutation(len(lengths))
    random_batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    random_cost = padded_tokens(random_batches, lengths)
    assert grouped <= 0.7 * random_cost, (grouped, random_cost)
    assert grouped >= lengths.sum()  # can never beat no padding at all


def test_sorted_batches_longest_first_and_complete():
    lengths = [3, 9, 1, 9, 4, 7, 2]
    batches = sorted_batches(lengths, 3)
    assert [len(b) for b in batches] == [3, 3, 1]
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)


def test_make_collate_pads_and_masks():
    collate = make_collate(pad_id=0)
    batch = collate([([101, 5, 6, 102], 1), ([101, 7, 102], 0), ([101, 102], -1)])
    assert batch["input_ids"].dtype == torch.long
    assert batch["input_ids"].tolist() == [[101, 5, 6, 102], [101, 7, 102, 0], [101, 102, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [1, 0, -1]
    collate99 = make_collate(pad_id=99)
    assert collate99([([1], 0), ([1, 2, 3], 1)])["input_ids"].tolist() == [[1, 99, 99], [1, 2, 3]]


@pytest.mark.parametrize("by_seed", [False, True])
def test_train_sample_by_seed_varies_only_the_training_reviews(by_seed):
    """A fixed split seed shares validation and test reviews across seeds; with
    train_sample_by_seed each seed draws its own training sample (a learning curve's spread)."""
    rows = [
        {"id": f"{split}/{i}", "text": f"review {i}", "label": i % 2, "split": split}
        for split in ("train", "test")
        for i in range(400)
    ]
    frame = pd.DataFrame(rows)
    config = DataConfig(
        source="x", val_fraction=0.25, train_size=60, test_size=100, split_seed=0, train_sample_by_seed=by_seed
    )
    one, two = (data_mod.make_splits(frame, config, seed=seed) for seed in (1, 2))
    assert list(one.val["id"]) == list(two.val["id"]) and list(one.test["id"]) == list(two.test["id"])
    assert (set(one.train["id"]) != set(two.train["id"])) is by_seed
    assert len(one.train) == 60 and one.train["label"].mean() == 0.5 and not set(one.train["id"]) & set(one.val["id"])
