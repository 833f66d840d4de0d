"""The joint space in TensorBoard's projector: `python -m vse_tf.projector`.

    python -m vse_tf.projector --model_dir=DIR [--split=test] [--max_images=500]
    tensorboard --logdir DIR/projector

embeds the split's first images and their captions with the run's best
checkpoint; see `vse_tf.serving.projector` for the files.
"""

from absl import flags

from vse_tf import errors
from vse_tf.cli import common
from vse_tf.data import pipeline
from vse_tf.serving import projector
from vse_tf.training import run_dir
from vse_tf.training import runs

flags.DEFINE_string(
    "split", "test", "Split whose images and captions are shown."
)
flags.DEFINE_integer(
    "max_images", 500, "Images shown (each with its captions)."
)
flags.DEFINE_string(
    "projector_dir",
    None,
    "Where the log dir goes; default MODEL_DIR/projector.",
)
FLAGS = common.FLAGS


def main(argv):
    del argv
    if FLAGS.max_images < 1:
        raise errors.UserError(
            f"--max_images={FLAGS.max_images}: the "
            "projector needs at least 1 image."
        )
    model = common.load_run(FLAGS)
    examples = pipeline.load_examples(
        runs.run_fact(FLAGS.model_dir, "dataset"), FLAGS.split, FLAGS.data_dir
    )
    log_dir = FLAGS.projector_dir or run_dir.RunDir(FLAGS.model_dir).projector
    count = projector.write_projector(
        model, examples, log_dir, FLAGS.max_images
    )
    print(
        f"Wrote {count} points to {log_dir}; view them with "
        f"`tensorboard --logdir {log_dir}` (Projector tab)."
    )


def run():
    """The program: `python -m vse_tf.projector`."""
    common.run(main)


if __name__ == "__main__":
    run()
