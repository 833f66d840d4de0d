"""Exports a run's towers for TF Serving: `python -m vse_tf.export`.

    python -m vse_tf.export --model_dir=DIR [--export_dir=DIR/export] [--version=N]

writes EXPORT/image_tower/N/ and EXPORT/text_tower/N/ from the run's best
checkpoint (with its hubness correction, where the run fitted one); see
`vse_tf.export_lib` for the signatures.
"""

import os

from absl import flags

from vse_tf import cli
from vse_tf import export_lib
from vse_tf import hubness
from vse_tf import runs

flags.DEFINE_string("export_dir", None,
                    "Where the towers go; default MODEL_DIR/export.")
flags.DEFINE_integer("version", None,
                     "Version number; default one above the newest there.")
FLAGS = cli.FLAGS


def main(argv):
    del argv
    model = runs.load_from_flags(FLAGS)
    export_dir = FLAGS.export_dir or os.path.join(FLAGS.model_dir, "export")
    version = export_lib.export_towers(
        model, export_dir, FLAGS.version,
        correction=hubness.load_run_banks(FLAGS.model_dir))
    for tower in export_lib.TOWERS:
        print(f"Exported {os.path.join(export_dir, tower, str(version))}")


if __name__ == "__main__":
    cli.run(main)
