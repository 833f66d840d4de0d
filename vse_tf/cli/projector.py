"""The joint space in TensorBoard's projector: `python -m vse_tf.projector`.

    python -m vse_tf.projector --model_dir=DIR [--split=test] [--max_images=500]
    tensorboard --logdir DIR/projector

embeds the split's first images and their captions with the run's best
checkpoint; see `vse_tf.serving.projector` for the files.
"""

from vse_tf import errors
from vse_tf.cli import common
from vse_tf.data import pipeline
from vse_tf.serving import projector
from vse_tf.training import run_dir
from vse_tf.training import runs


def main(flags):
    if flags.max_images < 1:
        raise errors.UserError(
            f"--max_images={flags.max_images}: the "
            "projector needs at least 1 image."
        )
    model = common.load_run(flags)
    examples = pipeline.load_examples(
        runs.run_fact(flags.model_dir, "dataset"), flags.split, flags.data_dir
    )
    log_dir = flags.projector_dir or run_dir.RunDir(flags.model_dir).projector
    count = projector.write_projector(
        model, examples, log_dir, flags.max_images
    )
    print(
        f"Wrote {count} points to {log_dir}; view them with "
        f"`tensorboard --logdir {log_dir}` (Projector tab)."
    )


def run():
    """The program: `python -m vse_tf.projector`."""
    parsed = common.run_parser("projector", __doc__)
    parsed.add_argument(
        "--split",
        default="test",
        help="split whose images and captions are shown",
    )
    parsed.add_argument(
        "--max_images",
        type=int,
        default=500,
        help="images shown (each with its captions)",
    )
    parsed.add_argument(
        "--projector_dir",
        help="where the log dir goes; default MODEL_DIR/projector",
    )
    common.run(main, parsed)


if __name__ == "__main__":
    run()
