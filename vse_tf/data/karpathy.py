"""Raw images with captions from Karpathy's split files (and, through the
same loader, from one's own caption file: see `caption_files`).

One reader serves Flickr8k, Flickr30K and MS-COCO, whose split files share
one schema (`dataset_flickr8k.json`, `dataset_flickr30k.json`,
`dataset_coco.json`):

    {"dataset": "flickr8k", "images": [{"filename": "1000268201_693b08cb0e.jpg",
     "imgid": 0, "split": "train" | "val" | "test" | "restval",
     "sentences": [{"raw": "A child in a pink dress ...", ...}, ...]}, ...]}

(COCO adds "filepath": "val2014" and "cocoid"). Under --data_dir:

    DATA_DIR/flickr8k/dataset_flickr8k.json   DATA_DIR/flickr8k/images/*.jpg
    DATA_DIR/flickr30k/dataset_flickr30k.json
    DATA_DIR/flickr30k/flickr30k-images/
    DATA_DIR/coco/dataset_coco.json           DATA_DIR/coco/images/val2014/...

Examples have the layout of every source (see `pipeline`): the image decoded,
its shorter side resized to `image_size` and centre-cropped (the serving
signature's preprocessing), the first `captions_per_image` captions, and the
image id.
"""

import functools
import json
import os

import gin
import numpy as np
import tensorflow as tf

from vse_tf import errors
from vse_tf.data import caption_files
from vse_tf.data import images
from vse_tf.data import records

DATASETS = {
    "flickr8k": "dataset_flickr8k.json",
    "flickr30k": "dataset_flickr30k.json",
    "coco": "dataset_coco.json",
}
IMAGE_FOLDERS = ("images", "{name}-images")
HOW_TO_GET = {
    "flickr8k": "Flickr8k (Hodosh et al., 2013) with Karpathy's "
    "dataset_flickr8k.json",
    "flickr30k": "the Flickr30K images (request them at "
    "https://shannon.cs.illinois.edu/DenotationGraph/) and "
    "Karpathy's dataset_flickr30k.json "
    "(https://cs.stanford.edu/people/karpathy/deepimagesent/)",
    "coco": "the MS-COCO 2014 train and val images (https://cocodataset.org)"
    " and Karpathy's dataset_coco.json "
    "(https://cs.stanford.edu/people/karpathy/deepimagesent/)",
}
# COCO's Karpathy "restval" images train too (113,287 in all).
SPLITS = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}
BAD_IMAGE_POLICIES = ("skip", "error")


def dataset_dir(name, data_dir):
    return os.path.join(
        os.path.expanduser(data_dir or "~/tensorflow_datasets"), name
    )


def read_split_file(name, data_dir, folder=None):
    """The parsed split file, or a DatasetError saying where it goes.

    `folder` is the dataset's own folder, default data_dir/name.
    """
    folder = folder or dataset_dir(name, data_dir)
    path = os.path.join(folder, DATASETS[name])
    if not os.path.exists(path):
        raise errors.DatasetError(
            f"{name} is not under --data_dir: {path} does not exist. Put "
            f"{HOW_TO_GET[name]} there, with the images in "
            f"{os.path.join(folder, IMAGE_FOLDERS[0])}/ (see "
            "docs/data.md), and pass the parent folder as --data_dir."
        )
    stat = os.stat(path)
    return _parse_split_file(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _parse_split_file(path, mtime_ns, size):
    # A run reads one split file for each split and for the captions
    # (dataset_coco.json: seconds to parse); the file's time and size in the
    # key make a changed file parsed again.
    del mtime_ns, size
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
        return content["images"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise errors.DatasetError(
            f"{path} is not a Karpathy split file ({error}); expected "
            '{"images": [{"filename", "split", "sentences": [{"raw"}]}]}.'
        ) from error


def image_folder(name, data_dir, folder=None):
    folder = folder or dataset_dir(name, data_dir)
    candidates = [
        os.path.join(folder, f.format(name=name)) for f in IMAGE_FOLDERS
    ]
    for candidate in candidates:
        if os.path.isdir(candidate):
            return candidate
    raise errors.DatasetError(
        f"No image folder for {name}: expected one of "
        f"{', '.join(candidates)}, holding {HOW_TO_GET[name]}."
    )


def split_entries(name, split, data_dir, folder=None):
    """The split file's entries of one split ("train": train + restval)."""
    entries = [
        e
        for e in read_split_file(name, data_dir, folder)
        if e.get("split") in SPLITS[split]
    ]
    if not entries:
        raise errors.DatasetError(
            f"The {name} split file has no {split!r} images."
        )
    return entries


def checked_split(
    name,
    split,
    data_dir,
    captions_per_image=5,
    on_bad_image="skip",
    folder=None,
):
    """(image paths, their captions, their ids) of a split, every listed
    image present, files that are not whole images skipped or an error."""
    entries = split_entries(name, split, data_dir, folder)
    folder = image_folder(name, data_dir, folder)
    paths, captions, ids = [], [], []
    for entry in entries:
        sentences = [s["raw"] for s in entry.get("sentences", [])]
        if len(sentences) < captions_per_image:
            raise errors.DatasetError(
                f"{entry['filename']} has {len(sentences)} captions in the "
                f"{name} split file, the protocol needs "
                f"{captions_per_image}: the file does not match its images. "
                f"Use the original {DATASETS[name]}."
            )
        path = os.path.join(
            folder, entry.get("filepath", ""), entry["filename"]
        )
        if not os.path.exists(path):
            raise errors.DatasetError(
                f"Missing image {path}, listed in {DATASETS[name]}. The image "
                f"folder must hold every image of the split file; get "
                f"{HOW_TO_GET[name]}."
            )
        paths.append(path)
        captions.append(sentences[:captions_per_image])
        ids.append(entry.get("cocoid", entry.get("imgid", len(ids))))
    return images.whole_photos(
        paths,
        captions,
        ids,
        f"the {name} {split} split",
        on_bad_image,
        f"the originals ({HOW_TO_GET[name]})",
    )


@gin.configurable
def load_examples(
    name,
    split,
    data_dir=None,
    image_size=256,
    captions_per_image=5,
    on_bad_image=None,
    captions_only=False,
):
    """Per-image examples of one split of photos with captions: a
    Karpathy-format dataset, or one's own caption file (`caption_files`).

    Args:
      name: "flickr8k", "flickr30k" or "coco"; "csv:PATH" or
        "jsonl:PATH", a caption file; "records:DIR", one prepared as
        records (`records`).
      split: "train" (COCO: train + restval), "val" or "test".
      data_dir: the folder holding `name/` (default ~/tensorflow_datasets);
        a relative caption file's PATH is looked for here after the
        current folder.
      image_size: images are resized (shorter side) and centre-cropped to
        this square.
      captions_per_image: the protocol's captions per image (5); COCO images
        with more keep the first ones. A caption file keeps every caption.
      on_bad_image: what to do with a file that is not a whole JPEG or PNG:
        "skip" it (and say how many were skipped) or stop with an "error"
        naming it. None skips in train and stops in val and test, whose
        size the protocols fix (Flickr 1,000 test images, COCO 5,000).
      captions_only: return the split's captions alone, a dataset of
        strings read from the split file: a vocabulary needs no image
        decoded.
    """
    errors.check_choice(
        "load_examples.on_bad_image", on_bad_image, (None, *BAD_IMAGE_POLICIES)
    )
    on_bad_image = images.bad_photo_policy(split, on_bad_image)
    if records.handles(name):
        return records.load_examples(
            name, split, data_dir, image_size, captions_only
        )
    if caption_files.handles(name) and captions_only:
        _, captions, _ = caption_files.read_photos(name, data_dir).of_split(
            split
        )
        return tf.data.Dataset.from_tensor_slices(
            [caption for group in captions for caption in group]
        )
    if caption_files.handles(name):
        listing = caption_files.checked_split(
            name, split, data_dir, on_bad_image
        )
        return _photo_examples(*listing, image_size)
    if captions_only:
        return tf.data.Dataset.from_tensor_slices(
            [
                s["raw"]
                for entry in split_entries(name, split, data_dir)
                for s in entry.get("sentences", [])[:captions_per_image]
            ]
        )
    listing = checked_split(
        name, split, data_dir, captions_per_image, on_bad_image
    )
    return _photo_examples(*listing, image_size)


def _photo_examples(paths, captions, ids, image_size):
    """Examples of photos decoded as they are read, with their captions
    (one count for all: a dense [C] each; else ragged) and ids."""
    counts = [len(c) for c in captions]
    if len(set(counts)) == 1:
        caption_tensor = np.array(captions, dtype=object).astype(str)
    else:
        caption_tensor = tf.RaggedTensor.from_row_lengths(
            [caption for group in captions for caption in group], counts
        )

    def decode(path, caption_list, image_id):
        pixels = images.decode_and_resize(
            tf.io.read_file(path), image_size, name=path
        )
        # uint8 like every other source: a cache of decoded images takes a
        # quarter of the memory of float32.
        return {
            "image": tf.cast(tf.round(pixels), tf.uint8),
            "captions": caption_list,
            "image_id": image_id,
        }

    return tf.data.Dataset.from_tensor_slices(
        (paths, caption_tensor, np.array(ids, np.int64))
    ).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
