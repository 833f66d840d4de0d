"""MS-COCO with Karpathy's splits, through TFDS `coco_captions/2014`.

The TFDS config already carries Karpathy's splits: train 82,783, restval
30,504, val 5,000 and test 5,000 images, 5 to 7 captions each. Training
uses train + restval (113,287 images), as VSE++ and the paper do; val and
test keep each image's first 5 captions, the protocol's.

Prepare it once (TFDS downloads the 2014 images from cocodataset.org, about
20 GB) into the --data_dir the tools are given:

    tfds build coco_captions/2014 --data_dir=DATA_DIR

The COCO 1K protocol averages five folds of 1,000 consecutive test images;
over TFDS's order they are not the folds of Karpathy's file (those of the
precomputed "testall" and of karpathy_captions/coco), so COCO 1K figures
from this source are comparable in expectation only. COCO 5K does not
depend on the order.

Examples have the layout of every source (see `pipeline`), images resized
and cropped by the serving signature's own function
(`images.resize_and_crop`).
"""

import gin
import tensorflow as tf
import tensorflow_datasets as tfds

from vse_tf import errors
from vse_tf.data import images

NAME = "coco_captions"
TFDS_NAME = "coco_captions/2014"
SPLITS = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}


def _splits(split, data_dir, captions_only):
    builder = tfds.builder(TFDS_NAME, data_dir=data_dir)
    # Captions alone: no image read or decoded.
    decoders = (
        tfds.decode.PartialDecoding({"captions": {"text": True}})
        if captions_only
        else None
    )
    try:
        parts = [
            builder.as_dataset(
                split=part, shuffle_files=False, decoders=decoders
            )
            for part in SPLITS[split]
        ]
    except (AssertionError, FileNotFoundError) as error:
        raise errors.DatasetError(
            f"MS-COCO ({TFDS_NAME}) is not prepared under "
            f"{builder.data_dir_root}. Prepare it once with `tfds build "
            f"{TFDS_NAME} --data_dir={builder.data_dir_root}` (it downloads "
            "the 2014 images from cocodataset.org, about 20 GB; see "
            "docs/data.md) and pass the same --data_dir."
        ) from error
    examples = parts[0]
    for part in parts[1:]:
        examples = examples.concatenate(part)
    return examples


@gin.configurable
def coco_captions(
    split,
    data_dir=None,
    image_size=256,
    captions_per_image=5,
    extra_captions=False,
    captions_only=False,
):
    """Per-image examples of one Karpathy split of MS-COCO.

    Args:
      split: "train" (train + restval), "val" or "test".
      data_dir: the TFDS data directory holding coco_captions/2014.
      image_size: images are resized (shorter side) and centre-cropped to
        this square.
      captions_per_image: captions kept per image (5, the protocol's).
      extra_captions: in the train split, keep every caption of an image
        (5 to 7) rather than the first `captions_per_image`; val and test
        always keep the protocol's.
      captions_only: return the split's captions alone, a dataset of
        strings, without decoding an image.
    """
    examples = _splits(split, data_dir, captions_only)
    keep_all = extra_captions and split == "train"

    def captions_of(example):
        text = example["captions"]["text"]
        return text if keep_all else text[:captions_per_image]

    if captions_only:
        return examples.map(captions_of).unbatch()

    def to_example(example):
        pixels = images.resize_and_crop(example["image"], image_size)
        captions = captions_of(example)
        if not keep_all:
            captions = tf.ensure_shape(captions, [captions_per_image])
        return {
            "image": tf.cast(tf.round(pixels), tf.uint8),
            "captions": captions,
            "image_id": example["image/id"],
        }

    return examples.map(to_example, num_parallel_calls=tf.data.AUTOTUNE)
