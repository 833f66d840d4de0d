"""One's own caption files (CSV, JSONL): rows to examples, the seeded
split, and an error naming the line for every kind of bad row."""

import csv
import json

import gin
import numpy as np
import pytest
import tensorflow as tf

from vse_tf import errors
from vse_tf.data import caption_files
from vse_tf.data import pipeline


def _jpeg(seed):
    rng = np.random.default_rng(seed)
    return tf.io.encode_jpeg(
        rng.integers(0, 256, size=(24, 36, 3), dtype=np.uint8)
    ).numpy()


def write_caption_file(folder, counts, splits=None, kind="csv"):
    """Photos photos/<i>.jpg with counts[i] captions each, one row a
    caption, rows of one photo apart (its second caption after the others'
    first); with `splits`, a split column. Returns the file's path."""
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    for index in range(len(counts)):
        (folder / "photos" / f"{index}.jpg").write_bytes(_jpeg(index))
    rows = [
        {
            "image": f"photos/{index}.jpg",
            "caption": f"photo {index}, caption {c}",
            **({"split": splits[index]} if splits else {}),
        }
        for c in range(max(counts))
        for index, count in enumerate(counts)
        if c < count
    ]
    path = folder / f"captions.{kind}"
    with open(path, "w", encoding="utf-8", newline="") as f:
        if kind == "csv":
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        else:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    return path


def _all(examples):
    return list(examples.as_numpy_iterator())


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_rows_become_photos_with_every_caption_in_file_order(tmp_path, kind):
    counts = [1, 3, 2, 5, 4, 1]
    splits = ["train", "test", "train", "val", "test", "train"]
    path = write_caption_file(tmp_path, counts, splits, kind)
    test = _all(pipeline.load_examples(f"{kind}:{path}", "test"))
    assert [e["image_id"] for e in test] == [1, 4]
    assert [e["captions"].tolist() for e in test] == [
        [f"photo 1, caption {c}".encode() for c in range(3)],
        [f"photo 4, caption {c}".encode() for c in range(4)],
    ]
    # Decoded and resized to load_examples' default 256 square.
    assert test[0]["image"].shape == (256, 256, 3)
    assert test[0]["image"].dtype == np.uint8
    train = pipeline.load_captions(f"{kind}:{path}", "train")
    assert sorted(_all(train)) == [
        b"photo 0, caption 0",
        b"photo 2, caption 0",
        b"photo 2, caption 1",
        b"photo 5, caption 0",
    ]


def test_a_relative_file_is_found_under_data_dir(tmp_path, monkeypatch):
    write_caption_file(tmp_path / "mine", [2, 2, 2], ["train", "val", "test"])
    monkeypatch.chdir(tmp_path)
    here = _all(pipeline.load_examples("csv:mine/captions.csv", "val"))
    there = _all(
        pipeline.load_examples(
            "csv:captions.csv", "val", str(tmp_path / "mine")
        )
    )
    assert here[0]["captions"].tolist() == there[0]["captions"].tolist()


def test_absolute_photo_paths_and_quoted_captions(tmp_path):
    photo = tmp_path / "elsewhere.jpg"
    photo.write_bytes(_jpeg(0))
    path = tmp_path / "captions.csv"
    path.write_text(
        "image,split,caption\n"
        f'{photo},train,"A dog, wet,\nshakes itself."\n'
        f"{photo},train,A second caption.\n",
        encoding="utf-8",
    )
    [example] = _all(pipeline.load_examples(f"csv:{path}", "train"))
    assert example["captions"].tolist() == [
        b"A dog, wet,\nshakes itself.",
        b"A second caption.",
    ]


def test_without_a_split_column_the_split_is_seeded_and_recorded(tmp_path):
    path = write_caption_file(tmp_path, [2] * 40)
    dataset = f"csv:{path}"

    def split_of_each_photo(seed):
        gin.bind_parameter("caption_file.seed", seed)
        gin.bind_parameter("caption_file.test_fraction", 0.2)
        return caption_files.read_photos(dataset).splits

    first, again, other = (split_of_each_photo(s) for s in (0, 0, 1))
    assert first == again and first != other
    assert first.count("test") == 8 and first.count("val") == 4
    gin.clear_config()
    record = caption_files.read_photos(dataset).record()
    assert record["split"] == {"seed": 0, "test": 0.1, "val": 0.1}
    assert record["sizes"]["train"] == {"images": 32, "captions": 64}
    assert record["sizes"]["test"] == {"images": 4, "captions": 8}
    ids = [
        e["image_id"]
        for split in ("train", "val", "test")
        for e in _all(pipeline.load_examples(dataset, split))
    ]
    assert sorted(ids) == list(range(40))


# What breaks a caption file of 3 photos, 2 captions each (line 1 the
# header, then photos 0, 1, 2, then their second captions): the line
# replaced (None: photo 1 deleted instead), and what the error says.
BREAKAGES = {
    "missing photo": (
        None,
        None,
        "line 3: the photo 'photos/1.jpg' is missing",
    ),
    "missing column": (0, "image,text,split", "line 1: no caption column"),
    "empty caption": (
        5,
        "photos/1.jpg,   ,val",
        "line 6: the caption is empty",
    ),
    "not UTF-8": (4, "photos/0.jpg,un caf\xe9,train", "line 5 is not UTF-8"),
    "unknown split": (
        2,
        "photos/1.jpg,a caption,validation",
        "line 3: split 'validation' is none of train, val, test",
    ),
    "two splits": (
        4,
        "photos/0.jpg,a caption,test",
        "line 5: 'photos/0.jpg' is in split 'test' here",
    ),
}


def _broken(tmp_path, breakage):
    """A caption file with one thing wrong; (its dataset name, what the
    error must say)."""
    path = write_caption_file(tmp_path, [2, 2, 2], ["train", "val", "test"])
    index, line, expected = BREAKAGES[breakage]
    if index is None:
        (tmp_path / "photos" / "1.jpg").unlink()
    else:
        lines = path.read_bytes().split(b"\n")
        # Latin-1: the one line that is not UTF-8 stays so.
        lines[index] = line.encode("latin-1")
        path.write_bytes(b"\n".join(lines))
    return f"csv:{path}", expected


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_a_bad_row_is_an_error_naming_its_line(tmp_path, breakage):
    dataset, expected = _broken(tmp_path, breakage)
    with pytest.raises(errors.DatasetError, match=expected):
        pipeline.load_examples(dataset, "train")


@pytest.mark.parametrize(
    "row, expected",
    [
        ('{"image": "photos/0.jpg"}', "line 2: the caption is missing"),
        ("not json", "line 2 is not JSON"),
        ('["photos/0.jpg", "a"]', "line 2 is not a JSON object"),
    ],
)
def test_a_bad_jsonl_line_is_an_error_naming_it(tmp_path, row, expected):
    path = write_caption_file(tmp_path, [1, 1, 1], kind="jsonl")
    lines = path.read_text().splitlines()
    lines.insert(1, row)
    path.write_text("\n".join(lines))
    with pytest.raises(errors.DatasetError, match=expected):
        pipeline.load_examples(f"jsonl:{path}", "train")


def test_a_broken_photo_is_skipped_in_train_and_an_error_in_test(
    tmp_path, capsys
):
    splits = ["train", "train", "train", "test", "test", "val"]
    path = write_caption_file(tmp_path, [1, 2, 3, 1, 2, 1], splits)
    (tmp_path / "photos" / "1.jpg").write_text("<html>Not found</html>")
    (tmp_path / "photos" / "4.jpg").write_bytes(b"")
    train = _all(pipeline.load_examples(f"csv:{path}", "train"))
    assert [e["image_id"] for e in train] == [0, 2]
    assert "skipped 1 of 3 images" in capsys.readouterr().out
    with pytest.raises(errors.DatasetError, match="4.jpg"):
        pipeline.load_examples(f"csv:{path}", "test")


@pytest.mark.parametrize(
    "bindings, named",
    [
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "leaves no photo"),
        ({"val_fraction": -0.1}, "caption_file.val_fraction"),
        ({"seed": 1.5}, "caption_file.seed"),
    ],
)
def test_bad_split_settings_are_named(bindings, named):
    with pytest.raises(errors.UserError, match=named):
        caption_files.split_settings(**bindings)


def test_a_file_that_is_not_there_names_where_it_looked(tmp_path):
    with pytest.raises(errors.DatasetError, match="no such file"):
        pipeline.load_examples("csv:nosuch.csv", "train", str(tmp_path))
