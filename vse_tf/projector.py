"""The joint space in TensorBoard's projector: `python -m vse_tf.projector`.

    python -m vse_tf.projector --model_dir=DIR [--split=test] [--max_images=500]
    tensorboard --logdir DIR/projector

embeds the split's first images and their captions with the run's best
checkpoint; see `vse_tf.projector_lib` for the files.
"""

import os

from absl import flags

from vse_tf import cli
from vse_tf import projector_lib
from vse_tf import runs
from vse_tf.data import pipeline

flags.DEFINE_string("split", "test", "Split whose images and captions are "
                    "shown.")
flags.DEFINE_integer("max_images", 500, "Images shown (each with its "
                     "captions).")
flags.DEFINE_string("projector_dir", None,
                    "Where the log dir goes; default MODEL_DIR/projector.")
FLAGS = cli.FLAGS


def main(argv):
    del argv
    model = runs.load_from_flags(FLAGS)
    examples = pipeline.load_examples(runs.train_argument("dataset"),
                                      FLAGS.split, FLAGS.data_dir)
    log_dir = FLAGS.projector_dir or os.path.join(FLAGS.model_dir,
                                                  "projector")
    count = projector_lib.write_projector(model, examples, log_dir,
                                         FLAGS.max_images)
    print(f"Wrote {count} points to {log_dir}; view them with "
          f"`tensorboard --logdir {log_dir}` (Projector tab).")


if __name__ == "__main__":
    cli.run(main)
