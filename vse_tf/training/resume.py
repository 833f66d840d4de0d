"""Whether a model dir can be resumed with the configuration at hand.

A rerun of a training command resumes from the run's backup. If the model
was configured differently (another tower size, dataset or vocabulary),
restoring would fail deep inside Keras with a shape error, or worse, succeed
and mix two experiments; this check names the bindings that differ first.
Values that do not shape the model (epochs, learning rate) may change.
"""

import os
import re

import gin

from vse_tf import errors
from vse_tf.training import run_dir

# Selectors whose values shape the weights or the vocabulary: every model
# factory is a build_* function (towers, heads, the dual encoder).
MODEL_DEFINING = ("build_", "train.dataset", "train.max_vocabulary")

_BINDING = re.compile(r"^([\w./]+)\s*=\s*(.*)$")


def parse_bindings(config_text):
    """{"selector.parameter": value text} of an operative config."""
    bindings = {}
    name = None
    for line in config_text.splitlines():
        match = _BINDING.match(line)
        if match:
            name = match.group(1)
            bindings[name] = match.group(2).rstrip(" \\")
        elif line.strip() and not line.lstrip().startswith("#") and name:
            # A value over many lines.
            bindings[name] = (bindings[name] + " " +
                              line.strip().rstrip(" \\")).strip()
        else:
            name = None
    # A value may name a macro (%EMBEDDING_DIM): compare what it stands for.
    return {name: re.sub(r"%(\w+)",
                         lambda m: bindings.get(m.group(1), m.group(0)), value)
            for name, value in bindings.items()}


def differences(old_text, new_text, prefixes=MODEL_DEFINING):
    """[(binding, old value, new value)] among the model-defining ones."""
    old, new = parse_bindings(old_text), parse_bindings(new_text)
    names = sorted(n for n in set(old) | set(new) if n.startswith(prefixes))
    return [(n, old.get(n, "(default)"), new.get(n, "(default)"))
            for n in names if old.get(n) != new.get(n)]


def check_model_dir(model_dir, has_checkpoint):
    """Raises a UserError if model_dir's model differs from gin's."""
    path = os.path.join(model_dir, run_dir.OPERATIVE_CONFIG)
    if not has_checkpoint or not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        changed = differences(f.read(), gin.operative_config_str())
    if changed:
        lines = "; ".join(f"{name} was {old}, now {new}"
                          for name, old, new in changed)
        raise errors.UserError(
            f"{model_dir!r} holds a run with a different model, so it cannot "
            f"be resumed: {lines}. Use a new --model_dir for the new "
            "configuration, or the run's own config "
            f"(--gin_file={path}) to continue it.")
