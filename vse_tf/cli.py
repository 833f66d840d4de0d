"""What every `python -m vse_tf.<tool>` shares: gin loading and user errors.

A user error (a typo in a binding, a missing file, an unwritable folder) ends
the program with one paragraph on stderr and exit status 2, never a
traceback.
"""

import difflib
import inspect
import logging
import os
import re
import sys
import textwrap

import gin
from absl import app
from absl import flags
from absl import logging as absl_logging

from vse_tf.data import pipeline
from vse_tf.pretrained import torch_weights

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "gin")
OPERATIVE_CONFIG = "operative_config.gin"

flags.DEFINE_multi_string(
    "gin_file", [], "Gin config file(s), applied in order; later ones win.")
flags.DEFINE_multi_string(
    "gin_bindings", [],
    "Gin bindings applied after the files, e.g. 'train.epochs = 2'.")
flags.DEFINE_string("model_dir", None, "The run's folder.")
flags.DEFINE_string(
    "data_dir", None,
    "Root of the datasets (TFDS data dir); default ~/tensorflow_datasets.")
FLAGS = flags.FLAGS


class UserError(Exception):
    """A mistake the user can fix; its message says how."""


def _known_configurables():
    from gin import config
    return {selector.split(".")[-1]: configurable
            for selector, configurable in config._REGISTRY.items()}  # noqa


def _explain_gin_error(error):
    message = str(error).split("\n")[0]
    configurables = _known_configurables()
    unknown = re.match(r"No configurable matching (?:reference )?'@?([\w.]+)",
                       message)
    if unknown:
        name = unknown.group(1).split(".")[-1].rstrip("()")
        close = difflib.get_close_matches(name, configurables, n=3)
        hint = (f" Did you mean {' or '.join(repr(c) for c in close)}?"
                if close else "")
        return f"Unknown gin configurable {name!r}.{hint}"
    parameter = re.match(
        r"Configurable '([\w.]+)' doesn't have a parameter named '(\w+)'",
        message)
    if parameter:
        name, param = parameter.groups()
        target = configurables.get(name.split(".")[-1])
        names = list(inspect.signature(target.wrapped).parameters) if (
            target) else []
        close = difflib.get_close_matches(param, names, n=3)
        hint = (f" Did you mean {' or '.join(repr(c) for c in close)}?"
                if close else f" It takes: {', '.join(names)}.")
        return f"{name!r} has no parameter {param!r}.{hint}"
    return f"Invalid gin configuration: {message}"


class _QuietIncludeProbes(logging.Filter):
    """Gin logs an ERROR for each search-path miss before an include hits."""

    def filter(self, record):
        return not record.getMessage().startswith("Path not found")


def load_gin(gin_files, gin_bindings):
    """Parses files then bindings once; every unknown name is an error."""
    from vse_tf import configurables  # noqa: F401  (registers gin names)
    missing = [f for f in gin_files if not os.path.exists(f)]
    if missing:
        raise UserError(
            f"Gin file not found: {', '.join(missing)}. The configs that "
            f"ship with vse_tf are in {GIN_DIR} (e.g. gin/demo.gin).")
    # Includes resolve next to the including file and in the shipped gin/.
    for path in [GIN_DIR] + [os.path.dirname(os.path.abspath(f))
                             for f in gin_files]:
        gin.add_config_file_search_path(path)
    quiet = _QuietIncludeProbes()
    logging.getLogger().addFilter(quiet)
    try:
        gin.parse_config_files_and_bindings(
            gin_files, gin_bindings, skip_unknown=False)
    except (ValueError, SyntaxError) as error:
        raise UserError(_explain_gin_error(error)) from error
    except IOError as error:
        raise UserError(f"{error}") from error
    finally:
        logging.getLogger().removeFilter(quiet)


def ensure_writable_dir(path, what="model dir"):
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-probe-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("")
        os.remove(probe)
    except OSError as error:
        raise UserError(
            f"Cannot write to the {what} {path!r} ({error.strerror}). Pass a "
            "folder you can write to.") from error


def run(main):
    """`absl.app.run(main)`, with user errors as one clean paragraph."""

    def guarded(argv):
        if not FLAGS["verbosity"].present:
            # TFDS and TensorFlow log every file they open at INFO; the
            # progress bars and tables are what a user reads.
            absl_logging.set_verbosity(absl_logging.WARNING)
        exit_on_user_error(main, argv)

    app.run(guarded)


def exit_on_user_error(main, *args):
    """Calls main(*args); a user error exits 2 with one clean paragraph."""
    try:
        return main(*args)
    except (UserError, pipeline.DatasetError,
            torch_weights.WeightsError) as error:
        # Gin appends where it was raised ("In call to configurable ..."):
        # noise for an error that already says what to fix.
        message = re.sub(r"\s+In call to configurable .*", "", str(error),
                         flags=re.DOTALL)
        text = textwrap.fill(message, width=79)
        print(f"error: {text}", file=sys.stderr)
        sys.exit(2)
