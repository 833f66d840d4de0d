"""What every `python -m vse_tf.<verb>` shares: its flags and its exit on a
user error.

Every program parses its flags with argparse: the standard library's, so
a program needs nothing but the package, and a bad flag exits 2 with
usage, as a user error does. A user error (a typo in a binding, a missing
file, an unwritable folder) ends the program with one paragraph on stderr
and exit status 2, never a traceback.
"""

import argparse
import re
import signal
import sys
import textwrap

from absl import logging as absl_logging

from vse_tf import errors
from vse_tf import gin_config
from vse_tf.gin_config import load_gin  # noqa: F401  (the programs' API)
from vse_tf.gin_config import load_gin_for_run  # noqa: F401

VERBOSITY = ("debug", "info", "warning", "error")


def parser(program, doc):
    """An ArgumentParser for `python -m vse_tf.<program>`: its --help
    shows the module docstring `doc`, and --verbosity."""
    parsed = argparse.ArgumentParser(
        prog=f"python -m vse_tf.{program}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parsed.add_argument(
        "--verbosity",
        choices=VERBOSITY,
        help="log level of TensorFlow and TFDS (default: warning, and "
        "TensorFlow's start-up lines dropped)",
    )
    return parsed


def run_parser(program, doc):
    """`parser`, with the flags of a program that configures a run by gin:
    --gin_file, --gin_bindings, --model_dir and --data_dir."""
    parsed = parser(program, doc)
    parsed.add_argument(
        "--gin_file",
        action="append",
        default=[],
        help="gin config file (repeatable), applied in order; later ones win",
    )
    parsed.add_argument(
        "--gin_bindings",
        action="append",
        default=[],
        help="a gin binding applied after the files (repeatable), e.g. "
        "'train.epochs = 2'",
    )
    parsed.add_argument("--model_dir", help="the run's folder")
    parsed.add_argument(
        "--data_dir",
        help="root of the datasets (TFDS data dir); default "
        "~/tensorflow_datasets",
    )
    return parsed


class Stopped(BaseException):
    """SIGTERM (a scheduler's or `kill`'s stop), raised where the program
    is, as Ctrl-C raises KeyboardInterrupt."""


def _stop_on_sigterm(signum, frame):
    del signum, frame
    raise Stopped()


def run(main, parsed, on_stop=None, argv=None):
    """main(the flags `parsed` parses from `argv`, the command line when
    None), with user errors as one clean paragraph.

    `python -m vse_tf.<verb>` runs a two-line module that calls this. A bad
    flag exits 2 with usage. Ctrl-C and SIGTERM end the program with one
    line, `on_stop(flags)`'s if given (what a rerun does), and exit status
    130 or 143.
    """
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    flags = parsed.parse_args(argv)
    # TFDS and TensorFlow log every file they open at INFO; the progress
    # bars and tables are what a user reads.
    absl_logging.set_verbosity(flags.verbosity or "warning")
    try:
        exit_on_user_error(main, flags)
    except (KeyboardInterrupt, Stopped) as stop:
        sent = (
            ("SIGTERM", 143)
            if isinstance(stop, Stopped)
            else ("Ctrl-C (SIGINT)", 130)
        )
        print(
            f"\nStopped by {sent[0]}."
            + (f" {on_stop(flags)}" if on_stop else ""),
            file=sys.stderr,
        )
        sys.exit(sent[1])


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
            source = gin_config.binding_source(parameter)
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
