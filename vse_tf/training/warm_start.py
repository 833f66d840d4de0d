"""Warm start: a new run begins from another run's weights.

As the paper's ConVSE++ begins from a trained VSE++ "base embedding"
(its authors' `--resume`, loaded with `strict=False`): every weight whose
path and shape in the base's weights file match one of the new model is
loaded, the others keep their initialization, and the optimizer starts
fresh. Paths are those of Keras's weights files (a layer's place in the
model, not its name), so the base must be built the same way where the
weights are to carry over.
"""

import os
import tempfile

import h5py

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
            "file.")
    return path


def warm_start(model, init_from):
    """Loads what matches of `init_from` into `model` (built); returns the
    table of what was loaded, left new and skipped."""
    source = weights_file(init_from)
    with tempfile.TemporaryDirectory() as folder:
        target = os.path.join(folder, "model.weights.h5")
        model.save_weights(target)
        loaded, new, skipped, mismatched = _copy_matching(source, target)
        if mismatched:
            shown = "; ".join(f"{name} {list(theirs)} in the base, "
                              f"{list(ours)} here"
                              for name, theirs, ours in mismatched[:SHOWN])
            raise errors.UserError(
                f"train.init_from = {init_from!r}: {len(mismatched)} "
                f"weight(s) have the same place but another shape ({shown})."
                " The base was built with other sizes; warm-start from a "
                "run whose towers have the sizes of this one.")
        if not loaded:
            raise errors.UserError(
                f"train.init_from = {init_from!r}: no weight of {source} "
                "has a place and shape of this model's, so nothing would "
                "load. Warm-start from a run of the same towers (and the "
                "same train.cache_features).")
        legacy_weights.load(model, target, "warm-start weights",
                            "The base file is damaged.")
    return format_table(source, loaded, new, skipped)


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
    rows = [("loaded", loaded), ("new (initialized)", new),
            ("skipped (base only)", skipped)]
    lines = [f"Warm start from {source}:"]
    for label, names in rows:
        shown = ", ".join(names[:SHOWN]) + (
            f", ... ({len(names) - SHOWN} more)" if len(names) > SHOWN
            else "")
        lines.append(f"  {label:<20} {len(names):>5}  {shown}")
    return "\n".join(lines)
