"""Exports a run's towers for TF Serving: `python -m vse_tf.export`.

    python -m vse_tf.export --model_dir=DIR [--export_dir=DIR/export] \\
        [--version=N]

writes EXPORT/image_tower/N/ and EXPORT/text_tower/N/ from the run's best
checkpoint (with its hubness correction, where the run fitted one); see
`vse_tf.serving.saved_model` for the signatures.
"""

import os

from vse_tf import errors
from vse_tf.cli import common
from vse_tf.serving import saved_model
from vse_tf.training import run_dir
from vse_tf.training import runs


def main(flags):
    if flags.version is not None and flags.version < 1:
        raise errors.UserError(
            f"--version={flags.version} is not a version: "
            "TF Serving numbers them from 1."
        )
    model = common.load_run(flags)
    export_dir = flags.export_dir or run_dir.RunDir(flags.model_dir).export
    version = saved_model.export_towers(
        model,
        export_dir,
        flags.version,
        correction=runs.load_hubness_correction(flags.model_dir),
    )
    for tower in saved_model.TOWERS:
        print(f"Exported {os.path.join(export_dir, tower, str(version))}")


def run():
    """The program: `python -m vse_tf.export`."""
    parsed = common.run_parser("export", __doc__)
    parsed.add_argument(
        "--export_dir", help="where the towers go; default MODEL_DIR/export"
    )
    parsed.add_argument(
        "--version",
        type=int,
        help="version number; default one above the newest there",
    )
    common.run(main, parsed)


if __name__ == "__main__":
    run()
