"""Exports a run's towers for TF Serving: `python -m vse_tf.export`.

    python -m vse_tf.export --model_dir=DIR [--export_dir=DIR/export] \\
        [--version=N]

writes EXPORT/image_tower/N/ and EXPORT/text_tower/N/ from the run's best
checkpoint (with its hubness correction, where the run fitted one); see
`vse_tf.serving.saved_model` for the signatures.
"""

import os

from absl import flags

from vse_tf import errors
from vse_tf.cli import common
from vse_tf.serving import saved_model
from vse_tf.training import run_dir
from vse_tf.training import runs

flags.DEFINE_string(
    "export_dir", None, "Where the towers go; default MODEL_DIR/export."
)
flags.DEFINE_integer(
    "version", None, "Version number; default one above the newest there."
)
FLAGS = common.FLAGS


def main(argv):
    del argv
    if FLAGS.version is not None and FLAGS.version < 1:
        raise errors.UserError(
            f"--version={FLAGS.version} is not a version: "
            "TF Serving numbers them from 1."
        )
    model = common.load_run(FLAGS)
    export_dir = FLAGS.export_dir or run_dir.RunDir(FLAGS.model_dir).export
    version = saved_model.export_towers(
        model,
        export_dir,
        FLAGS.version,
        correction=runs.load_hubness_correction(FLAGS.model_dir),
    )
    for tower in saved_model.TOWERS:
        print(f"Exported {os.path.join(export_dir, tower, str(version))}")


def run():
    """The program: `python -m vse_tf.export`."""
    common.run(main)


if __name__ == "__main__":
    run()
