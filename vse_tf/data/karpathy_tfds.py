"""`karpathy_captions`: Flickr30K (and Flickr8k, MS-COCO) with Karpathy's
splits as a TFDS dataset, built from files the user provides.

TFDS cannot download Flickr30K (its images are given out on request), so
the builder reads a manual folder, the same one `karpathy` reads:

    DATA_DIR/flickr30k/dataset_flickr30k.json
    DATA_DIR/flickr30k/flickr30k-images/*.jpg

One config per split file: karpathy_captions/flickr30k (29,000 / 1,014 /
1,000 images), karpathy_captions/flickr8k and karpathy_captions/coco
(train + restval 113,287 / 5,000 / 5,000). The first use prepares the
TFRecords under DATA_DIR/karpathy_captions/ (minutes; the original JPEG
bytes are stored as they are); then training reads sharded records, which
multi-worker runs split by file.
"""

import dataclasses

import gin
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vse_tf.data import images
from vse_tf.data import karpathy

NAME = "karpathy_captions"


@dataclasses.dataclass
class KarpathyConfig(tfds.core.BuilderConfig):
    dataset: str = "flickr30k"


class KarpathyCaptions(tfds.core.GeneratorBasedBuilder):
    """Images with five captions each, in Karpathy's splits."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        KarpathyConfig(
            name=name,
            dataset=name,
            description=f"{name}, from {karpathy.DATASETS[name]}",
        )
        for name in ("flickr30k", "flickr8k", "coco")
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put Karpathy's split file and the images in the manual folder, e.g. "
        "for Flickr30K: dataset_flickr30k.json and flickr30k-images/ "
        "(vse_tf passes DATA_DIR/<dataset>/ as the manual folder)."
    )

    def _info(self):
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "captions": tfds.features.Sequence(
                        tfds.features.Text(), length=5
                    ),
                    "image_id": np.int64,
                }
            ),
            supervised_keys=None,
            # The split file's order: COCO 1K cuts the test split into
            # folds in that order.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        manual_dir = str(dl_manager.manual_dir)
        return {
            split: self._generate_examples(split, manual_dir)
            for split in karpathy.SPLITS
        }

    def _generate_examples(self, split, folder):
        name = self.builder_config.dataset
        paths, captions, ids = karpathy.checked_split(
            name, split, None, folder=folder
        )
        for path, texts, image_id in zip(paths, captions, ids):
            yield (
                int(image_id),
                {"image": path, "captions": texts, "image_id": image_id},
            )


@gin.configurable
def karpathy_captions(
    name, split, data_dir=None, image_size=256, captions_only=False
):
    """Per-image examples of one split, prepared on first use.

    Args:
      name: "flickr30k", "flickr8k" or "coco" (the builder config).
      split: "train" (with COCO's restval), "val" or "test".
      data_dir: holds the manual folder `name/` and the prepared records.
      image_size: images are resized (shorter side) and centre-cropped to
        this square, as the serving signature does.
      captions_only: the split's captions alone, no image decoded.
    """
    builder = tfds.builder(f"{NAME}/{name}", data_dir=data_dir)
    if not builder.is_prepared():
        manual_dir = karpathy.dataset_dir(name, data_dir)
        # Checked here, so that a missing file is our clear error rather
        # than one from inside TFDS.
        karpathy.read_split_file(name, data_dir)
        karpathy.image_folder(name, data_dir)
        print(f"Preparing {NAME}/{name} from {manual_dir} (once).")
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
    if captions_only:
        return (
            builder.as_dataset(
                split=split,
                decoders=tfds.decode.PartialDecoding({"captions": True}),
            )
            .map(lambda example: example["captions"])
            .unbatch()
        )

    def to_example(example):
        pixels = images.resize_and_crop(example["image"], image_size)
        return {
            "image": tf.cast(tf.round(pixels), tf.uint8),
            "captions": example["captions"],
            "image_id": example["image_id"],
        }

    return builder.as_dataset(split=split, shuffle_files=False).map(
        to_example, num_parallel_calls=tf.data.AUTOTUNE
    )
