"""Whether a run folder can be resumed with the model at hand.

A rerun of a training command resumes from the run's backup. If the model
was configured differently (another tower size, head or loss layout) or
the data is another dataset, restoring would fail deep inside Keras with a
shape error, or worse, succeed and mix two experiments.

The check is by structure, not by the names of bindings: the backup's
weights (each by its path in the weights file and its shape) must be those
of the model just built, whatever factory built it, and run.json's dataset
the one configured. When they differ, the error lists the weights that
differ and, to say why, the bindings that changed since the run.
Values that do not shape the model (epochs, learning rate) may change.
"""

import os
import re
import tempfile

import gin

from vse_tf import errors
from vse_tf.training import legacy_weights

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
            bindings[name] = (
                bindings[name] + " " + line.strip().rstrip(" \\")
            ).strip()
        else:
            name = None
    # A value may name a macro (%EMBEDDING_DIM): compare what it stands for.
    return {
        name: re.sub(
            r"%(\w+)", lambda m: bindings.get(m.group(1), m.group(0)), value
        )
        for name, value in bindings.items()
    }


def differences(old_text, new_text):
    """[(binding, old value, new value)] of every binding that changed."""
    old, new = parse_bindings(old_text), parse_bindings(new_text)
    return [
        (n, old.get(n, "(default)"), new.get(n, "(default)"))
        for n in sorted(set(old) | set(new))
        if old.get(n) != new.get(n)
    ]


def weight_shapes(path):
    """{weight's path: shape} of a Keras weights file, without the
    optimizer's state; a file of the old layout under the names of now."""
    return {
        name: shape for name, (_, shape) in legacy_weights.weights(path).items()
    }


def model_weight_shapes(model):
    """`weight_shapes` of `model` as it is now."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.weights.h5")
        model.save_weights(path)
        return weight_shapes(path)


def check_backup(run, model, dataset, cache_features=False):
    """Raises a UserError if `run`'s backup holds another model than
    `model` (built), another dataset than `dataset`, or weights trained
    with and without cached features."""
    if not run.has_backup():
        return
    problems = []
    info = run.read_run_info()
    if info.get("dataset", dataset) != dataset:
        problems.append(
            f"it trained on {info['dataset']!r}, this run is "
            f"configured for {dataset!r}"
        )
    if info.get("cache_features", cache_features) != cache_features:
        problems.append(
            f"it trained with train.cache_features = "
            f"{info['cache_features']}, this run sets "
            f"{cache_features}"
        )
    old, new = weight_shapes(run.backup_weights), model_weight_shapes(model)
    changed = sorted(
        name for name in set(old) | set(new) if old.get(name) != new.get(name)
    )
    if changed:
        shown = "; ".join(
            f"{name} {_shape(old.get(name))} -> {_shape(new.get(name))}"
            for name in changed[:3]
        )
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        problems.append(
            f"{len(changed)} of its weights differ from this "
            f"model's ({shown}{more})"
        )
    if not problems:
        return
    why = ""
    if run.is_run():
        with open(run.operative_config, encoding="utf-8") as f:
            bindings = differences(f.read(), gin.operative_config_str())
        if bindings:
            why = (
                " Bindings changed since the run: "
                + "; ".join(
                    f"{name} was {old_value}, now {new_value}"
                    for name, old_value, new_value in bindings
                )
                + "."
            )
    raise errors.UserError(
        f"{run.path!r} holds a run of another model or data, so it cannot "
        f"be resumed: {'; '.join(problems)}.{why} Use a new --model_dir "
        "for the new configuration, or the run's own config "
        f"(--gin_file={run.operative_config}) to continue it."
    )


def _shape(shape):
    return "(none)" if shape is None else str(list(shape))
