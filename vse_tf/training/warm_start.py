"""Warm start: a new run begins from another run's weights.

As the paper's ConVSE++ begins from a trained VSE++ "base embedding"
(its authors' `--resume`, loaded with `strict=False`): every weight whose
path and shape in the base's weights file match one of the new model is
loaded, the others keep their initialization, and the optimizer starts
fresh. Paths are those of Keras's weights files (a layer's place in the
model, not its name), so the base must be built the same way where the
weights are to carry over.
"""

import dataclasses
import os
import tempfile

import h5py
import numpy as np

from vse_tf import errors
from vse_tf.training import legacy_weights
from vse_tf.training import run_dir

SHOWN = 4  # names listed a row in the table


def weights_file(init_from):
    """The weights file `init_from` names: a `.weights.h5` file, or a run
    folder (its best checkpoint)."""
    path = os.path.expanduser(init_from)
    if os.path.isdir(path):
        path = run_dir.RunDir(path).best_weights
    if not os.path.isfile(path):
        raise errors.UserError(
            f"train.init_from = {init_from!r} names no weights: expected a "
            "run folder with checkpoints/best.weights.h5, or a .weights.h5 "
            "file."
        )
    return path


@dataclasses.dataclass
class Report:
    """What a warm start loaded: `table` to print, and per tower
    {"loaded": weights taken from the base, "of": the tower's weights}."""

    table: str
    towers: dict

    def __str__(self):
        return self.table


def warm_start(model, init_from):
    """Loads what matches of `init_from` into `model` (built); returns the
    `Report` of what was loaded, left new and skipped.

    A base that gives neither tower a weight is refused (the learned
    temperature alone, say, would replace the configured one and warm
    nothing); one that gives a tower less than half of its weights is
    reported with a warning line.
    """
    source = weights_file(init_from)
    with tempfile.TemporaryDirectory() as folder:
        target = os.path.join(folder, "model.weights.h5")
        towers = _tower_weights(model, target)
        loaded, new, skipped, mismatched = _copy_matching(source, target)
        if mismatched:
            shown = "; ".join(
                f"{name} {list(theirs)} in the base, {list(ours)} here"
                for name, theirs, ours in mismatched[:SHOWN]
            )
            raise errors.UserError(
                f"train.init_from = {init_from!r}: {len(mismatched)} "
                f"weight(s) have the same place but another shape ({shown})."
                " The base was built with other sizes; warm-start from a "
                "run whose towers have the sizes of this one."
            )
        counts = {
            tower: {"loaded": len(names & set(loaded)), "of": len(names)}
            for tower, names in towers.items()
        }
        if not any(count["loaded"] for count in counts.values()):
            shown = f" (only {', '.join(loaded[:SHOWN])})" if loaded else ""
            raise errors.UserError(
                f"train.init_from = {init_from!r}: no weight of {source} "
                "has a place and shape of this model's towers, so no tower "
                f"would start warm{shown}. Warm-start from a run of the "
                "same towers (and the same train.cache_features)."
            )
        legacy_weights.load(
            model, target, "warm-start weights", "The base file is damaged."
        )
    table = format_table(source, loaded, new, skipped)
    for tower, count in counts.items():
        if count["loaded"] < count["of"] / 2:
            table += (
                f"\nWARNING: the {tower} takes only {count['loaded']} "
                f"of its {count['of']} weights from the base; the "
                "rest start from their initialization."
            )
    return Report(table, counts)


def _tower_weights(model, path):
    """{tower name: the names its weights have in `model`'s weights file}.

    Found by saving the model with one tower's weights moved: the names
    whose values change are that tower's, whatever path the file gives
    them (a heads model files its text head elsewhere). Leaves `path`
    holding the model's weights as they are."""
    moved = {}
    for tower in model.both_towers():
        originals = [weight.numpy() for weight in tower.weights]
        for weight, value in zip(tower.weights, originals):
            # Changes every finite value, zeros and large ones included.
            weight.assign(
                np.where(value == 0, 1, 2 * value).astype(value.dtype)
            )
        moved[tower.name] = legacy_weights.weights_and_values(model, path)
        for weight, value in zip(tower.weights, originals):
            weight.assign(value)
    baseline = legacy_weights.weights_and_values(model, path)
    return {
        tower: {
            name
            for name, value in values.items()
            if not np.array_equal(value, baseline[name])
        }
        for tower, values in moved.items()
    }


def _copy_matching(source, target):
    """Writes into `target` every weight of `source` that matches one of
    its own (the optimizer's state stays out: a warm start begins a new
    run); (loaded, new, skipped, mismatched) weight names."""
    theirs = legacy_weights.weights(source)
    own = legacy_weights.weights(target)
    loaded, new, mismatched = [], [], []
    with h5py.File(target, "r+") as ours, h5py.File(source, "r") as stored:
        # Names are compared as `legacy_weights` reads them; data moves
        # between the paths each file really has (a heads model keeps a
        # "layers/functional_1" group of its own).
        for name, (path, shape) in sorted(own.items()):
            match = theirs.get(name)
            if match is None:
                new.append(name)
            elif match[1] != shape:
                mismatched.append((name, match[1], shape))
            else:
                ours[path][...] = stored[match[0]][...]
                loaded.append(name)
    skipped = sorted(set(theirs) - set(own))
    return loaded, new, skipped, mismatched


def format_table(source, loaded, new, skipped):
    rows = [
        ("loaded", loaded),
        ("new (initialized)", new),
        ("skipped (base only)", skipped),
    ]
    lines = [f"Warm start from {source}:"]
    for label, names in rows:
        shown = ", ".join(names[:SHOWN]) + (
            f", ... ({len(names) - SHOWN} more)" if len(names) > SHOWN else ""
        )
        lines.append(f"  {label:<20} {len(names):>5}  {shown}")
    return "\n".join(lines)
