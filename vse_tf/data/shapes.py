"""`shapes`: the built-in dataset, a TFDS builder generated offline.

Images of 1 to 4 coloured shapes with 5 captions each (see `scenes`). Every
example is a pure function of (seed, split, index), so the dataset is the
same on every machine and in every generation order. The test split has the
size of the Flickr30K 1K test: 1,000 images x 5,000 captions.

    import vse_tf.data.shapes  # registers the builder
    tfds.load("shapes", data_dir=...)           # 64x64, 10k/1k/1k images
    tfds.load("shapes/tiny", data_dir=...)      # 32x32, for quick tests
"""

import dataclasses
import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from vse_tf.data import scenes

SPLIT_INDEX = {"train": 0, "val": 1, "test": 2}


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
    image_size: int = 64
    num_train: int = 10_000
    num_val: int = 1_000
    num_test: int = 1_000
    seed: int = 0


class Shapes(tfds.core.GeneratorBasedBuilder):
    """Coloured shapes with spatial relations, five captions per image."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First release.",
        "1.1.0": "The colours caption no longer follows the process's str "
        "hash order: every generation gives the same captions.",
    }
    BUILDER_CONFIGS = [
        ShapesConfig(
            name="default", description="64x64 images; 10,000 / 1,000 / 1,000."
        ),
        ShapesConfig(
            name="tiny",
            image_size=32,
            num_train=256,
            num_val=40,
            num_test=40,
            description="32x32 images for tests.",
        ),
    ]

    def _info(self):
        size = self.builder_config.image_size
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(size, size, 3)),
                    "captions": tfds.features.Sequence(
                        tfds.features.Text(), length=scenes.CAPTIONS_PER_IMAGE
                    ),
                    "image_id": np.int64,
                }
            ),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: the data is drawn here
        config = self.builder_config
        sizes = {
            "train": config.num_train,
            "val": config.num_val,
            "test": config.num_test,
        }
        return {
            split: self._generate_examples(split, size)
            for split, size in sizes.items()
        }

    def _generate_examples(self, split, size):
        config = self.builder_config
        split_index = SPLIT_INDEX[split]
        for index in range(size):
            image, captions, _ = scenes.make_example(
                config.seed, split_index, index, config.image_size
            )
            # Ids are unique across splits and stay below 2**24, where
            # float32 (the dtype Keras gives a loss target) is exact.
            image_id = split_index * 1_000_000 + index
            yield (
                image_id,
                {
                    "image": _png(image),
                    "captions": captions,
                    "image_id": image_id,
                },
            )


def _png(image):
    # PIL encodes a small PNG ~25x faster than TFDS's per-call TF encoder.
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    buffer.seek(0)
    return buffer
