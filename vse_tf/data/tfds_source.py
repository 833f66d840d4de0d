"""Any TFDS dataset by name; the built-in `shapes` is drawn on first use."""

import os

import tensorflow_datasets as tfds

from vse_tf.data import shapes
from vse_tf.errors import DatasetError

BUILT_IN = {"shapes": shapes.Shapes}


def load(dataset, split, data_dir, captions_only):
    """Per-image examples of a prepared TFDS dataset (generating a built-in
    one first), or its captions alone."""
    builder = _builder(dataset, data_dir)
    if type(builder) in BUILT_IN.values():
        # Drawn locally in seconds: nothing is ever downloaded.
        builder.download_and_prepare()
    elif not builder.is_prepared():
        raise DatasetError(
            f"Dataset {dataset!r} is not prepared under "
            f"{builder.data_dir_root}. Prepare it with "
            f"`tfds build {dataset} --data_dir={builder.data_dir_root}` "
            "(see docs/data.md) and pass the same --data_dir."
        )
    if split not in builder.info.splits:
        raise DatasetError(
            f"Dataset {dataset!r} has no split {split!r}; it has "
            f"{sorted(builder.info.splits)}."
        )
    if captions_only:
        return (
            builder.as_dataset(
                split=split, decoders={"image": tfds.decode.SkipDecoding()}
            )
            .map(lambda example: example["captions"])
            .unbatch()
        )
    return builder.as_dataset(split=split, shuffle_files=False)


def _builder(dataset, data_dir):
    data_dir = os.path.expanduser(data_dir) if data_dir else None
    try:
        return tfds.builder(dataset, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise NotFound(dataset) from error
    except AssertionError as error:
        # TFDS asserts, rather than raise, on a version it does not have.
        if ":" not in dataset:
            raise
        name = dataset.split(":")[0]
        builder = tfds.builder_cls(name.split("/")[0])
        versions = [
            str(builder.VERSION),
            *(str(v) for v in builder.SUPPORTED_VERSIONS),
        ]
        raise DatasetError(
            f"train.dataset = {dataset!r} names a version that {name!r} "
            f"does not have; it has {', '.join(versions)}. Use "
            f"'{name}:{versions[0]}', or {name!r} for the newest."
        ) from error


class NotFound(DatasetError):
    """No TFDS dataset has this name."""
