"""Where examples come from: one small protocol, one list of sources.

A source answers for some dataset names and loads a split of one as a
tf.data.Dataset of per-image examples, {"image": uint8 [H, W, 3] (or
float32 features), "captions": string [C], "image_id": int64}, or of its
captions alone. `pipeline` asks the first source that handles a name; a
new source is a `Source` added with `register`, no `if` to edit.
"""

import dataclasses
import difflib
from typing import Callable

from vse_tf import errors
from vse_tf.data import caption_files
from vse_tf.data import coco
from vse_tf.data import images
from vse_tf.data import karpathy
from vse_tf.data import karpathy_tfds
from vse_tf.data import precomp
from vse_tf.data import records
from vse_tf.data import tfds_source


@dataclasses.dataclass(frozen=True)
class Source:
    """A source of examples.

    Attributes:
      name: what it is, for messages.
      handles: dataset name -> whether this source loads it.
      load: (dataset, split, data_dir, captions_only) -> tf.data.Dataset.
      describe: (dataset, data_dir) -> what run.json keeps of the data
        beyond its name (a split the source made), or None.
      photos: (dataset, split, data_dir) -> (file names, index -> encoded
        bytes) of a split's photos as they are stored, for search; None
        where a source keeps no files (search then names an image
        DATASET:SPLIT/ID and reads its decoded pixels).
    """

    name: str
    handles: Callable
    load: Callable
    describe: Callable = lambda dataset, data_dir: None
    photos: Callable = None


def _photo_files(listing):
    paths = listing[0]

    def read(index):
        with open(paths[index], "rb") as f:
            return f.read()

    return images.file_names(paths), read


# What `train.dataset` may name, for the suggestion on a near miss.
NAMES = (
    *karpathy.DATASETS,
    *precomp.DATASETS,
    coco.NAME,
    *(f"{karpathy_tfds.NAME}/{name}" for name in karpathy.DATASETS),
    "shapes",
    "shapes/tiny",
    "csv:PATH",
    "jsonl:PATH",
    "records:DIR",
)


def _tfds(dataset, split, data_dir, captions_only):
    try:
        return tfds_source.load(dataset, split, data_dir, captions_only)
    except tfds_source.NotFound:
        close = difflib.get_close_matches(dataset, NAMES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise errors.DatasetError(
            f"train.dataset = {dataset!r} is no dataset vse_tf knows: not "
            f"one of {', '.join(map(repr, NAMES))}, nor a TFDS name.{hint}"
        ) from None


SOURCES = [
    Source(
        "a caption file prepared as sharded records",
        records.handles,
        lambda dataset, split, data_dir, captions_only: karpathy.load_examples(
            dataset, split, data_dir, captions_only=captions_only
        ),
        lambda dataset, data_dir: records.read_manifest(dataset, data_dir)[1],
        records.encoded_photos,
    ),
    Source(
        "one's own CSV or JSONL file of photos and captions",
        caption_files.handles,
        lambda dataset, split, data_dir, captions_only: karpathy.load_examples(
            dataset, split, data_dir, captions_only=captions_only
        ),
        lambda dataset, data_dir: caption_files.read_photos(
            dataset, data_dir
        ).record(),
        lambda dataset, split, data_dir: _photo_files(
            caption_files.checked_split(dataset, split, data_dir, "skip")
        ),
    ),
    Source(
        "raw photos with Karpathy's split files",
        lambda dataset: dataset in karpathy.DATASETS,
        lambda dataset, split, data_dir, captions_only: karpathy.load_examples(
            dataset, split, data_dir, captions_only=captions_only
        ),
        photos=lambda dataset, split, data_dir: _photo_files(
            karpathy.checked_split(
                dataset, split, data_dir, on_bad_image="skip"
            )
        ),
    ),
    Source(
        "precomputed features",
        lambda dataset: dataset in precomp.DATASETS,
        lambda dataset, split, data_dir, captions_only: precomp.load_examples(
            dataset, split, data_dir, captions_only=captions_only
        ),
    ),
    Source(
        "TFDS coco_captions",
        lambda dataset: dataset == coco.NAME,
        lambda dataset, split, data_dir, captions_only: coco.coco_captions(
            split, data_dir, captions_only=captions_only
        ),
    ),
    Source(
        "TFDS records of Karpathy's split files",
        lambda dataset: dataset.startswith(karpathy_tfds.NAME + "/"),
        lambda dataset, split, data_dir, captions_only: (
            karpathy_tfds.karpathy_captions(
                dataset.split("/")[1],
                split,
                data_dir,
                captions_only=captions_only,
            )
        ),
    ),
    # Last: any other name is a TFDS dataset ("shapes", "shapes/tiny").
    Source("a TFDS dataset", lambda dataset: True, _tfds),
]


def register(source):
    """Adds `source` ahead of the built-in ones."""
    SOURCES.insert(0, source)


def find(dataset):
    return next(source for source in SOURCES if source.handles(dataset))
