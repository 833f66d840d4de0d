"""Weights files of run folders written before towers were `Tower`s.

Keras files a model held in a list under its class name: a DualEncoder's
text tower was saved under `layers/functional_1` (a plain functional
model), and is `layers/tower_1` now. Nothing else moved, so such a
checkpoint or backup loads once that group is renamed, in a copy; the
file itself is never changed.
"""

import os
import shutil
import tempfile
import warnings

import h5py

from vse_tf import errors

OLD, NEW = "layers/functional_1", "layers/tower_1"


def load(model, path, what, advice, optimizer_state=False):
    """`model.load_weights(path)`, from a renamed copy if the file is of
    the old layout; a damaged file, or one of another model, is a
    UserError that names it (`what`) and says `advice`.

    Without `optimizer_state` (scoring, export, warm starts) the model's
    optimizer is not built, and Keras's warning that it skips the file's
    optimizer variables says nothing wrong: it is silenced.
    """
    with warnings.catch_warnings():
        if not optimizer_state:
            warnings.filterwarnings(
                "ignore", message="Skipping variable loading for optimizer"
            )
        _load(model, path, what, advice)


def _load(model, path, what, advice):
    try:
        model.load_weights(path)
        return
    except (OSError, ValueError) as error:
        failure = error
    if _old_layout(path):
        with tempfile.TemporaryDirectory() as folder:
            copy = os.path.join(folder, os.path.basename(path))
            shutil.copyfile(path, copy)
            with h5py.File(copy, "r+") as stored:
                stored.move(OLD, NEW)
            try:
                model.load_weights(copy)
                return
            except (OSError, ValueError):
                pass
    raise errors.UserError(
        f"Cannot read the {what} {path} "
        f"({str(failure).splitlines()[0]}). {advice}"
    ) from failure


def weights_and_values(model, path):
    """{weight's name: its value} of `model`, as `model.save_weights`
    writes them to `path` (the optimizer's state left out)."""
    model.save_weights(path)
    with h5py.File(path, "r") as stored:
        return {
            name: stored[where][()]
            for name, (where, _) in weights(path).items()
        }


def weights(path):
    """{weight's path as this version names it: (its path in the file,
    its shape)} of a Keras weights file, without the optimizer's state
    (which a model not yet trained lacks)."""
    found = {}

    def visit(name, item):
        if isinstance(item, h5py.Dataset) and not name.startswith("optimizer/"):
            found[renamed(name)] = (name, tuple(item.shape))

    with h5py.File(path, "r") as stored:
        stored.visititems(visit)
    return found


def renamed(name):
    """A weight's path in a file of the old layout, as it is now."""
    if name == OLD or name.startswith(OLD + "/"):
        return NEW + name[len(OLD) :]
    return name


def _old_layout(path):
    try:
        with h5py.File(path, "r") as stored:
            return OLD in stored and NEW not in stored
    except OSError:
        return False
