"""Trains a dual encoder from gin configs.

    python -m vse_tf.train --gin_file=gin/demo.gin --model_dir=runs/demo

Every experiment value (data, towers, loss, optimizer, schedule) comes from
--gin_file and --gin_bindings: `train.<keyword>` for the run itself (see
`vse_tf.training.settings.run_settings`), the rest for what it builds.
`vse_tf.training.run_dir` lists what the run writes.
"""

from vse_tf import errors
from vse_tf.cli import common


def main(flags):
    common.load_gin(flags.gin_file, flags.gin_bindings)
    if not flags.model_dir:
        raise errors.UserError(
            "--model_dir is required: the folder where the "
            "run writes checkpoints, logs and metrics."
        )
    from vse_tf.training import trainer

    trainer.train(flags.model_dir, data_dir=flags.data_dir)


def what_a_rerun_does(flags):
    """Where the stopped run is, and what the same command does next."""
    from vse_tf.training import run_dir

    run = run_dir.RunDir(flags.model_dir or "")
    if not run.has_backup():
        return (
            "No epoch was backed up yet: the same command trains "
            "from the start."
        )
    done = run.backed_up_epochs()
    if not done:  # stopped between the weights and their metadata
        return f"The same command resumes from the backup in {run.backup}."
    epochs = run.read_run_info().get("epochs")
    if done == epochs:
        return (
            f"All {epochs} epochs are backed up in {run.backup}: the "
            "same command scores and exports the best checkpoint."
        )
    return (
        f"The backup in {run.backup} holds epoch {done}: the same "
        f"command resumes from epoch {done + 1}."
    )


def run():
    """The program: `python -m vse_tf.train`."""
    common.run(
        main, common.run_parser("train", __doc__), on_stop=what_a_rerun_does
    )


if __name__ == "__main__":
    run()
