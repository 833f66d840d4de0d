"""Gin configuration, loaded by the programs and by `vse_tf.load`.

`load_gin` registers every configurable (`vse_tf.configurables`), parses
the files and then the bindings once, and turns gin's errors into user
errors that name the binding and suggest the closest name. Below the
programs so that the library's own entry, `vse_tf.load`, can read a run's
configuration; no module below this layer loads gin files.
"""

import difflib
import inspect
import logging
import os
import re

import gin

from vse_tf import compat
from vse_tf import errors
from vse_tf.training import run_dir

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "gin")


def _explain_gin_error(error):
    message = str(error).split("\n")[0]
    configurables = compat.gin_configurables()
    unknown = re.match(
        r"No configurable matching (?:reference )?'@?([\w.]+)", message
    )
    if unknown:
        name = unknown.group(1).split(".")[-1].rstrip("()")
        close = difflib.get_close_matches(name, configurables, n=3)
        hint = (
            f" Did you mean {' or '.join(repr(c) for c in close)}?"
            if close
            else ""
        )
        return f"Unknown gin configurable {name!r}.{hint}"
    macro = re.match(r"No bindings specified for '(\w+)/gin.macro'", message)
    if macro:
        name = macro.group(1)
        return (
            f"The gin macro {name} has no value; the config uses it but "
            f'leaves it to you: add --gin_bindings="{name} = ..." (see '
            "the comment where the config uses it)."
        )
    parameter = re.match(
        r"Configurable '([\w.]+)' doesn't have a parameter named '(\w+)'",
        message,
    )
    if parameter:
        name, param = parameter.groups()
        target = configurables.get(name.split(".")[-1])
        names = list(inspect.signature(target).parameters) if (target) else []
        close = difflib.get_close_matches(param, names, n=3)
        hint = (
            f" Did you mean {' or '.join(repr(c) for c in close)}?"
            if close
            else f" It takes: {', '.join(names)}."
        )
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
        raise errors.UserError(
            f"Gin file not found: {', '.join(missing)}. The configs that "
            f"ship with vse_tf are in {GIN_DIR} (e.g. gin/demo.gin)."
        )
    # Includes resolve next to the including file and in the shipped gin/.
    for path in [GIN_DIR] + [
        os.path.dirname(os.path.abspath(f)) for f in gin_files
    ]:
        gin.add_config_file_search_path(path)
    quiet = _QuietIncludeProbes()
    logging.getLogger().addFilter(quiet)
    _SOURCES.clear()
    try:
        # One source at a time, as parse_config_files_and_bindings does, to
        # remember which one set each binding.
        for source in gin_files:
            _parsed(source, gin.parse_config_file, source)
        _parsed("--gin_bindings", gin.parse_config, gin_bindings)
        gin.finalize()
    except (ValueError, SyntaxError) as error:
        raise errors.UserError(_explain_gin_error(error)) from error
    except IOError as error:
        raise errors.UserError(f"{error}") from error
    finally:
        logging.getLogger().removeFilter(quiet)


# {gin parameter: the file (or --gin_bindings) that last set it}.
_SOURCES = {}


def _bindings():
    """{parameter: its value's text} of gin's current config."""
    bindings, key = {}, None
    for line in gin.config_str().splitlines():
        if line.startswith("#") or not line.strip():
            key = None
        elif line[0].isspace() and key:  # a long value's next line
            bindings[key] += line
        else:
            key, _, value = line.partition(" = ")
            bindings[key] = value
    return bindings


def _parsed(source, parse, text):
    """parse(text), remembering which bindings it set as `source`'s."""
    before = _bindings()
    parse(text, skip_unknown=False)
    for key, value in _bindings().items():
        if before.get(key) != value:
            _SOURCES[key] = source


def binding_source(parameter):
    """Where the loaded config set `parameter` ("make_optimizer.clipnorm"):
    a gin file (with what it includes), "--gin_bindings", or None when
    nothing bound it (the function's default)."""
    return _SOURCES.get(parameter)


def load_gin_for_run(model_dir, gin_files=(), gin_bindings=()):
    """The given gin files, else the run's own operative_config.gin."""
    run = run_dir.RunDir(model_dir)
    if not gin_files:
        if not run.is_run():
            raise errors.UserError(
                f"{model_dir!r} is not a training run: it has no "
                f"{run_dir.OPERATIVE_CONFIG}. Pass the --model_dir of a run, "
                "or the run's --gin_file."
            )
        gin_files = [run.operative_config]
    load_gin(list(gin_files), gin_bindings)
