"""Prepares a caption file as sharded records: `python -m vse_tf.prepare`.

    python -m vse_tf.prepare --dataset=csv:my_photos/captions.csv \\
        --output=data/my_records [--shard_size=1000]

then train with `train.dataset = 'records:data/my_records'`. Each split is
written a shard at a time (memory holds one shard's photos), every shard
renamed into place whole: stopped, the same command again writes only the
shards that are missing. Photos that are not whole JPEG or PNG files are
skipped in train and stop the program in val and test. Without a split
column, the seeded split follows --gin_bindings such as
'caption_file.test_fraction = 0.2'; records.json records it.
"""

import os

import keras

from vse_tf import errors
from vse_tf import gin_config
from vse_tf.cli import common
from vse_tf.data import caption_files
from vse_tf.data import records
from vse_tf.training import callbacks


def main(flags):
    if not caption_files.handles(flags.dataset):
        raise errors.UserError(
            f"--dataset={flags.dataset!r} is not a caption file: give "
            "csv:PATH or jsonl:PATH (see docs/data.md)."
        )
    errors.check_number(
        "--shard_size", flags.shard_size, minimum=1, integer=True
    )
    gin_config.load_gin([], flags.gin_bindings)
    photos = caption_files.read_photos(flags.dataset, flags.data_dir)
    progress = keras.utils.Progbar(
        len(photos.images),
        unit_name="photo",
        verbose=callbacks.progress_verbosity(),
    )
    manifest = records.prepare(
        flags.dataset, flags.output, flags.data_dir, flags.shard_size, progress
    )
    for split, names in manifest["shards"].items():
        size = manifest["sizes"][split]
        print(
            f"{split:5}  {size['images']:>9,} photos  {size['captions']:>10,} "
            f"captions  {len(names):>5} shard(s)"
        )
    print(
        f"Wrote {os.path.join(flags.output, records.MANIFEST)}; train with "
        f"--gin_bindings=\"train.dataset = 'records:{flags.output}'\"."
    )


def run():
    """The program: `python -m vse_tf.prepare`."""
    parsed = common.parser("prepare", __doc__)
    parsed.add_argument(
        "--dataset",
        required=True,
        help="the caption file: csv:PATH or jsonl:PATH",
    )
    parsed.add_argument(
        "--output", required=True, help="the folder the records go into"
    )
    parsed.add_argument(
        "--data_dir", help="where a relative PATH is looked for second"
    )
    parsed.add_argument(
        "--shard_size", type=int, default=1000, help="photos a shard (1000)"
    )
    parsed.add_argument(
        "--gin_bindings",
        action="append",
        default=[],
        help="caption_file.* settings of the seeded split (repeatable)",
    )
    common.run(
        main,
        parsed,
        on_stop=lambda flags: (
            "The shards written are whole; run the same "
            "command again to write the rest."
        ),
    )


if __name__ == "__main__":
    run()
