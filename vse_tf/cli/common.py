"""What every `python -m vse_tf.<verb>` shares: its flags and its exit on a
user error.

A user error (a typo in a binding, a missing file, an unwritable folder) ends
the program with one paragraph on stderr and exit status 2, never a
traceback.
"""

import re
import signal
import sys
import textwrap

from absl import app
from absl import flags
from absl import logging as absl_logging

from vse_tf import errors
from vse_tf.cli import config
from vse_tf.cli.config import load_gin  # noqa: F401  (the programs' API)
from vse_tf.cli.config import load_gin_for_run  # noqa: F401

flags.DEFINE_multi_string(
    "gin_file", [], "Gin config file(s), applied in order; later ones win."
)
flags.DEFINE_multi_string(
    "gin_bindings",
    [],
    "Gin bindings applied after the files, e.g. 'train.epochs = 2'.",
)
flags.DEFINE_string("model_dir", None, "The run's folder.")
flags.DEFINE_string(
    "data_dir",
    None,
    "Root of the datasets (TFDS data dir); default ~/tensorflow_datasets.",
)
FLAGS = flags.FLAGS


class Stopped(BaseException):
    """SIGTERM (a scheduler's or `kill`'s stop), raised where the program
    is, as Ctrl-C raises KeyboardInterrupt."""


def _stop_on_sigterm(signum, frame):
    del signum, frame
    raise Stopped()


def run(main, on_stop=None):
    """`absl.app.run(main)`, with user errors as one clean paragraph.

    `python -m vse_tf.<verb>` runs a two-line module that calls this; its
    --help shows the docstring and flags of `main`'s module. Ctrl-C and
    SIGTERM end the program with one line, `on_stop()`'s if given (what a
    rerun does), and exit status 130 or 143.
    """
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    program = sys.modules[main.__module__]
    sys.modules["__main__"].__doc__ = program.__doc__
    for module in (program, sys.modules[__name__]):
        for flag in FLAGS.get_key_flags_for_module(module):
            FLAGS.register_key_flag_for_module(sys.argv[0], flag)

    def guarded(argv):
        if not FLAGS["verbosity"].present:
            # TFDS and TensorFlow log every file they open at INFO; the
            # progress bars and tables are what a user reads.
            absl_logging.set_verbosity(absl_logging.WARNING)
        try:
            exit_on_user_error(main, argv)
        except (KeyboardInterrupt, Stopped) as stop:
            sent = (
                ("SIGTERM", 143)
                if isinstance(stop, Stopped)
                else ("Ctrl-C (SIGINT)", 130)
            )
            print(
                f"\nStopped by {sent[0]}."
                + (f" {on_stop()}" if on_stop else ""),
                file=sys.stderr,
            )
            sys.exit(sent[1])

    app.run(guarded)


def exit_on_user_error(main, *args):
    """Calls main(*args); a user error exits 2 with one clean paragraph."""
    try:
        return main(*args)
    except errors.UserError as error:
        # Gin appends where it was raised ("In call to configurable ..."):
        # noise for an error that already says what to fix.
        message = re.sub(
            r"\s+In call to configurable .*", "", str(error), flags=re.DOTALL
        )
        sources = []
        for parameter in error.parameters:
            source = config.binding_source(parameter)
            sources.append(
                f"{parameter} is set by {source}"
                if source
                else f"{parameter} is its function's default"
            )
        if sources:
            message += f" ({'; '.join(sources)}.)"
        text = textwrap.fill(
            message, width=79, break_on_hyphens=False, break_long_words=False
        )
        print(f"error: {text}", file=sys.stderr)
        sys.exit(2)


def load_run(flags):
    """The trained model of --model_dir, configured by its own gin or by
    --gin_file."""
    from vse_tf.training import runs  # builds models: TensorFlow, Keras

    if not flags.model_dir:
        raise errors.UserError(
            "--model_dir is required: the folder of a training run."
        )
    load_gin_for_run(flags.model_dir, flags.gin_file, flags.gin_bindings)
    return runs.load_trained_model(flags.model_dir)
