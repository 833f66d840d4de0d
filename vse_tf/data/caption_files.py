"""One's own photos and captions: a CSV or JSONL file, one row a caption.

`train.dataset = 'csv:PATH'` or `'jsonl:PATH'`. Each row names a photo and
one of its captions; a photo has as many captions as rows name it:

    image,caption,split                      (CSV, a header row first)
    beach/0001.jpg,A dog runs into the waves.,train
    {"image": "beach/0001.jpg", "caption": "A dog runs ...", "split": "train"}

`image` is a path, relative to the file's folder or absolute. `split` is
"train", "val" or "test"; without the column, photos go to splits at random,
seeded (`caption_file.val_fraction`, `.test_fraction`, `.seed`), and the
split is recorded in run.json. PATH itself is absolute, relative to the
current folder, or else to --data_dir.

Every row is checked before anything trains: the file must be UTF-8, have
the columns, a caption in every row and every photo present; an error names
the line. Photos that are not whole JPEG or PNG files follow
`load_examples.on_bad_image`, as Karpathy's datasets do.
"""

import collections
import csv
import dataclasses
import functools
import io
import json
import os

import gin
import numpy as np

from vse_tf import errors
from vse_tf.data import images

FORMATS = ("csv", "jsonl")
COLUMNS = ("image", "caption")
SPLITS = ("train", "val", "test")


def handles(dataset, kinds=FORMATS):
    """Whether `dataset` is KIND:PATH for a KIND of `kinds` (by default a
    caption file: 'csv:PATH', 'jsonl:PATH')."""
    kind, colon, path = dataset.partition(":")
    return bool(colon) and kind in kinds and bool(path)


def locate(dataset, data_dir, exists):
    """(the absolute path `dataset`'s PATH names, where it was looked
    for): PATH as it is, else under `data_dir` when relative; the path is
    None when `exists` holds for neither."""
    path = os.path.expanduser(dataset.partition(":")[2])
    tried = [os.path.abspath(path)]
    if not os.path.isabs(path) and data_dir:
        tried.append(os.path.abspath(os.path.join(data_dir, path)))
    found = next((candidate for candidate in tried if exists(candidate)), None)
    return found, tried


@gin.configurable("caption_file")
def split_settings(val_fraction=0.1, test_fraction=0.1, seed=0):
    """How photos are split when the file has no `split` column.

    Args:
      val_fraction: the share of photos in val (at least one photo when
        above 0).
      test_fraction: the share of photos in test (likewise).
      seed: the split's seed; the same file and seed give the same split.
    """
    for name, value in (
        ("val_fraction", val_fraction),
        ("test_fraction", test_fraction),
    ):
        errors.check_number(f"caption_file.{name}", value, minimum=0, maximum=1)
    if val_fraction + test_fraction >= 1:
        raise errors.UserError(
            f"caption_file.val_fraction + caption_file.test_fraction = "
            f"{val_fraction + test_fraction:g} leaves no photo to train on; "
            "their sum must be below 1."
        )
    errors.check_number("caption_file.seed", seed, integer=True)
    return {"val": val_fraction, "test": test_fraction, "seed": int(seed)}


@dataclasses.dataclass(frozen=True)
class Photos:
    """The file's photos: paths, their captions in file order, and the
    split of each."""

    path: str
    images: list
    captions: list
    splits: list
    split_from: dict  # {"column": "split"} or the seeded split's settings

    def of_split(self, split):
        """(photo paths, their captions, their ids) of `split`; an id is
        the photo's place in the file (its first row)."""
        keep = [i for i, s in enumerate(self.splits) if s == split]
        if not keep:
            raise errors.DatasetError(
                f"{self.path} has no {split!r} photos. Every split needs at "
                "least one: add rows with split = "
                f"{split!r}, or drop the split column for a seeded split."
            )
        return (
            [self.images[i] for i in keep],
            [self.captions[i] for i in keep],
            keep,
        )

    def record(self):
        """What run.json keeps of the split: where it came from and its
        size, photos and captions a split."""
        sizes = {
            split: {
                "images": self.splits.count(split),
                "captions": sum(
                    len(c)
                    for c, s in zip(self.captions, self.splits)
                    if s == split
                ),
            }
            for split in SPLITS
        }
        return {"file": self.path, "split": self.split_from, "sizes": sizes}


def find_file(dataset, data_dir=None):
    """The caption file `dataset` names, as an absolute path."""
    path, tried = locate(dataset, data_dir, os.path.isfile)
    if path:
        return path
    raise errors.DatasetError(
        f"train.dataset = {dataset!r}: no such file ({' nor '.join(tried)})."
        " Give the path of a CSV or JSONL file with the columns image and "
        "caption (see docs/data.md)."
    )


def checked_split(dataset, split, data_dir=None, on_bad_image=None):
    """(photo paths, their captions, their ids) of `split`, without the
    photos that are not whole JPEG or PNG files (`images.whole_photos`,
    by `images.bad_photo_policy` unless `on_bad_image` says)."""
    return images.whole_photos(
        *read_photos(dataset, data_dir).of_split(split),
        f"the {split} split of {dataset}",
        images.bad_photo_policy(split, on_bad_image),
        "whole photos",
    )


def read_photos(dataset, data_dir=None):
    """The `Photos` of a caption file, every row checked, split made."""
    path = find_file(dataset, data_dir)
    stat = os.stat(path)
    return _read_photos(
        path,
        dataset.partition(":")[0],
        stat.st_mtime_ns,
        stat.st_size,
        tuple(sorted(split_settings().items())),
    )


@functools.lru_cache(maxsize=2)
def _read_photos(path, kind, mtime_ns, size, split_by):
    # Each split and the vocabulary read the file: parsed once; its time
    # and size in the key make a changed file parsed again.
    del mtime_ns, size
    rows = _rows(path, kind)
    folder = os.path.dirname(path)
    captions = collections.defaultdict(list)
    splits = {}
    for line, row in rows:
        image = os.path.join(folder, os.path.expanduser(row["image"]))
        if image not in captions and not os.path.isfile(image):
            raise errors.DatasetError(
                f"{path} line {line}: the photo {row['image']!r} is missing "
                f"(looked for {image}). Image paths are relative to the "
                "file's folder, or absolute."
            )
        captions[image].append(row["caption"])
        split = row.get("split")
        if splits.setdefault(image, split) != split:
            raise errors.DatasetError(
                f"{path} line {line}: {row['image']!r} is in split "
                f"{split!r} here and {splits[image]!r} on an earlier line; "
                "a photo belongs to one split."
            )
    images = list(captions)
    if "split" in rows[0][1]:
        split_from = {"column": "split"}
        assigned = [splits[image] for image in images]
    else:
        split_from = dict(split_by)
        assigned = _seeded_split(len(images), split_from)
    return Photos(
        path, images, [captions[i] for i in images], assigned, split_from
    )


def _seeded_split(count, settings):
    """A split name for each of `count` photos, in file order."""
    order = np.random.default_rng(settings["seed"]).permutation(count)
    sizes = {
        split: max(1, round(settings[split] * count)) if settings[split] else 0
        for split in ("test", "val")
    }
    assigned = ["train"] * count
    for place, index in enumerate(order):
        if place < sizes["test"]:
            assigned[index] = "test"
        elif place < sizes["test"] + sizes["val"]:
            assigned[index] = "val"
    return assigned


def _rows(path, kind):
    """[(line number, {column: value})], every row checked."""
    with open(path, "rb") as f:
        content = f.read()
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = content[: error.start].count(b"\n") + 1
        raise errors.DatasetError(
            f"{path} line {line} is not UTF-8 (byte {error.start}: "
            f"{error.reason}). Save the file as UTF-8."
        ) from None
    rows = _csv_rows(path, text) if kind == "csv" else _jsonl_rows(path, text)
    if not rows:
        raise errors.DatasetError(f"{path} has no rows of captions.")
    has_split = "split" in rows[0][1]
    for line, row in rows:
        for column in (*COLUMNS, *(("split",) if has_split else ())):
            value = row.get(column)
            if not isinstance(value, str) or not value.strip():
                problem = "missing" if value is None else "empty"
                raise errors.DatasetError(
                    f"{path} line {line}: the {column} is {problem}. Every "
                    f"row needs an image, a caption"
                    + (" and a split" if has_split else "")
                    + "."
                )
        if has_split and row["split"] not in SPLITS:
            raise errors.DatasetError(
                f"{path} line {line}: split {row['split']!r} is none of "
                f"{', '.join(SPLITS)}."
            )
    return rows


def _csv_rows(path, text):
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise errors.DatasetError(
            f"{path} line 1: no {' or '.join(missing)} column (the header "
            f"names {', '.join(reader.fieldnames or ()) or 'nothing'}). The "
            "first row names the columns: image, caption and, optionally, "
            "split."
        )
    rows = []
    for row in reader:
        # line_num is the row's last line; a quoted caption may span lines.
        rows.append((reader.line_num, row))
    return rows


def _jsonl_rows(path, text):
    rows = []
    for line, content in enumerate(text.splitlines(), start=1):
        if not content.strip():
            continue
        try:
            row = json.loads(content)
        except json.JSONDecodeError as error:
            raise errors.DatasetError(
                f"{path} line {line} is not JSON ({error.msg}); each line "
                'is one object, {"image": ..., "caption": ...}.'
            ) from None
        if not isinstance(row, dict):
            raise errors.DatasetError(
                f"{path} line {line} is not a JSON object; each line is "
                '{"image": ..., "caption": ...}.'
            )
        rows.append((line, row))
    return rows
