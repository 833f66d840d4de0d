"""Trains a dual encoder from gin configs.

    python -m vse_tf.train --gin_file=gin/demo.gin --model_dir=runs/demo

Every experiment value (data, towers, loss, optimizer, schedule) comes from
--gin_file and --gin_bindings; see `vse_tf.training.trainer.train` for the
outputs.
"""

from vse_tf import errors
from vse_tf.cli import common

FLAGS = common.FLAGS


def main(argv):
    del argv
    common.load_gin(FLAGS.gin_file, FLAGS.gin_bindings)
    if not FLAGS.model_dir:
        raise errors.UserError("--model_dir is required: the folder where the "
                               "run writes checkpoints, logs and metrics.")
    from vse_tf.training import trainer
    trainer.train(FLAGS.model_dir, data_dir=FLAGS.data_dir)


def run():
    """The program: `python -m vse_tf.train`."""
    common.run(main)


if __name__ == "__main__":
    run()
