"""Callbacks of a training run: validation, backup, divergence guard, and
stops at the end of a step."""

import csv
import io
import json
import math
import os
import signal
import sys
import threading

import h5py
import keras

from vse_tf import errors
from vse_tf import evaluation
from vse_tf import io_utils
from vse_tf.evaluation import embedding
from vse_tf.training import legacy_weights


def progress_verbosity():
    """Keras's `verbose` for a progress display: 1, a live bar, on a
    terminal; 2, one plain line per epoch (no ANSI codes or carriage
    returns), in a log file, under nohup or a cluster job, or with
    VSE_TF_QUIET_PROGRESS set."""
    if os.environ.get("VSE_TF_QUIET_PROGRESS") or not sys.stdout.isatty():
        return 2
    return 1


class DeferSignals(keras.callbacks.Callback):
    """Holds SIGINT and SIGTERM while Keras trains, until a step ends.

    A signal's handler runs wherever the main thread is, which may be deep
    in TensorFlow's C++: an exception raised while it makes a tf.data
    iterator can corrupt its heap and abort the process. As a context
    around `fit` and one of its callbacks, this notes a signal instead,
    and at the end of the next step (or epoch, after the callbacks before
    it, the backup among them, have run) hands it to the handler it
    replaced, which raises from plain Python: KeyboardInterrupt for
    Ctrl-C, the programs' own stop for SIGTERM.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        super().__init__()
        self.received = None
        self.replaced = {}

    def __enter__(self):
        # Handlers can only be set in the main thread.
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self.replaced[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, kind, error, traceback):
        if kind is None:
            self.deliver()
        self._restore()

    def _note(self, signum, frame):
        del frame
        self.received = signum

    def _restore(self):
        for signum, handler in self.replaced.items():
            signal.signal(signum, handler)
        self.replaced = {}

    def deliver(self):
        """Hands a noted signal to the handler it was meant for."""
        if self.received is None:
            return
        signum, self.received = self.received, None
        handler = self.replaced.get(signum, signal.SIG_DFL)
        self._restore()
        if callable(handler):
            handler(signum, None)
        else:  # the default action (or none, where it was ignored)
            signal.raise_signal(signum)

    def on_train_batch_end(self, batch, logs=None):
        self.deliver()

    def on_epoch_end(self, epoch, logs=None):
        self.deliver()


# The attribute of the best weights file that holds its record.
BEST_RECORD = "vse_tf_best"


def best_record(run):
    """The record of `run`'s best checkpoint (its epoch and val metrics),
    read from the weights file it describes, so that the two cannot
    disagree; from best.json for a checkpoint written without it; None
    without a best checkpoint."""
    try:
        with h5py.File(run.best_weights, "r") as weights:
            text = weights.attrs.get(BEST_RECORD)
    except OSError:  # none, or damaged (loading it says so, where it is)
        text = None
    if text is not None:
        return json.loads(text)
    if os.path.exists(run.best_state):
        return io_utils.read_json(run.best_state)
    return None


def save_best(model, run, record):
    """Writes `model`'s weights as `run`'s best checkpoint with `record`
    inside the file (one rename puts both in place), then best.json's
    copy of the record."""
    with io_utils.atomic_path(run.best_weights) as tmp:
        model.save_weights(tmp)
        with h5py.File(tmp, "a") as weights:
            weights.attrs[BEST_RECORD] = json.dumps(record)
    io_utils.write_json_atomic(run.best_state, record)


class RetrievalValidation(keras.callbacks.Callback):
    """Scores the validation split each epoch; keeps the best by rsum.

    Adds `val_<metric>` and `learning_rate` to the epoch logs, so callbacks
    after this one (TensorBoard, early stopping) see them. The best weights
    are written atomically to the `run_dir.RunDir` `run`'s best weights,
    their record (the epoch and metrics, which also lets a resumed run keep
    the best it had) inside the same file, one unit; best.json holds a
    copy of the record for readers without h5py.
    """

    def __init__(self, examples, run, folds=1):
        super().__init__()
        self.examples = examples
        self.run = run
        self.folds = folds
        record = best_record(run)
        self.best_rsum = -1.0 if record is None else record["val_rsum"]

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        try:
            metrics = embedding.evaluate_model(
                self.model, self.examples, self.folds
            )
        except evaluation.NonFiniteEmbeddings as error:
            raise diverged(
                f"at the end of epoch {epoch + 1} (step "
                f"{int(self.model.optimizer.iterations.numpy())}), whose "
                f"last update broke the model: {error}",
                self.run,
            ) from error
        logs.update({f"val_{name}": value for name, value in metrics.items()})
        logs["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        if metrics["rsum"] > self.best_rsum:
            self.best_rsum = metrics["rsum"]
            record = {
                "epoch": epoch + 1,
                **{f"val_{k}": v for k, v in metrics.items()},
            }
            save_best(self.model, self.run, record)
        # On a terminal, after the live progress bar's line.
        start = "\n" if progress_verbosity() == 1 else ""
        print(
            f"{start}epoch {epoch + 1}: val rsum {metrics['rsum']:.1f} "
            f"(i2t R@1 {metrics['i2t_r1']:.1f}, t2i R@1 "
            f"{metrics['t2i_r1']:.1f}; best {self.best_rsum:.1f})"
        )


class EpochHistory(keras.callbacks.Callback):
    """`history.csv`: one row an epoch of the epoch logs (loss, learning
    rate, val R@K), for plots and spreadsheets without TensorBoard.

    The whole file is rewritten atomically each epoch, so a kill leaves
    the last complete one; a resumed run keeps the rows of the epochs
    before the one it resumes at and writes the rest.
    """

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        rows = [
            row for row in read_history(self.path) if int(row["epoch"]) <= epoch
        ]
        rows.append(
            {
                "epoch": epoch + 1,
                **{
                    name: float(value)
                    for name, value in sorted((logs or {}).items())
                },
            }
        )
        columns = list(dict.fromkeys(name for row in rows for name in row))
        text = io.StringIO()
        writer = csv.DictWriter(text, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        io_utils.write_text_atomic(self.path, text.getvalue())


def read_history(path):
    """The rows of a `history.csv` (strings), none if there is no file."""
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


class TrainingDiverged(errors.UserError):
    """The loss became NaN or infinite; the message names the step."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops the run at the first step whose loss is NaN or infinite.

    It raises at once, inside the step's callbacks, so that no epoch-end
    callback (validation, backup) ever sees the broken weights: the best
    checkpoint and the backup stay those of the last good epoch. (A step's
    loss is taken before its update, so the epoch's last update can break
    the model with every loss finite: `RetrievalValidation` stops the run
    then.)
    """

    def __init__(self, run):
        super().__init__()
        self.run = run  # a `run_dir.RunDir`, named in the error
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        raise diverged(
            f"at step {int(self.model.optimizer.iterations.numpy())} (epoch "
            f"{self.epoch + 1}, batch {batch + 1}): the loss is "
            f"{float(loss)}",
            self.run,
        )


def diverged(where, run):
    """The TrainingDiverged error for the run (a `run_dir.RunDir`) that
    broke `where`."""
    record = best_record(run)
    kept = (
        "No epoch finished, so there is no checkpoint."
        if record is None
        else f"The best checkpoint is unchanged: epoch {record['epoch']} in "
        f"{run.checkpoints}."
    )
    return TrainingDiverged(
        f"Training stopped {where}. {kept} Lower the learning rate, set "
        "make_optimizer.global_clipnorm, or check the inputs of that step."
    )


class BackupAndRestore(keras.callbacks.Callback):
    """An epoch backup that a kill at any moment cannot break.

    Each epoch's end writes the weights with the optimizer's state
    (`latest.weights.h5`, as Keras's own BackupAndRestore names it) and
    then `training_metadata.json`, each to a temporary name and renamed. A
    restore takes the epoch from the optimizer's step count stored with
    the weights, so the two files can never disagree.

    Every worker of a multi-worker run restores from the backup of `run`
    (the chief's `run_dir.RunDir`), so all resume at the same step; each
    writes to the backup of its own `worker_dir` (the chief's is `run`).
    """

    def __init__(self, run, steps_per_epoch, worker_dir=None):
        super().__init__()
        self.run = run
        self.steps_per_epoch = steps_per_epoch
        self.worker_dir = worker_dir or run

    def restore(self, model):
        """Loads the backup into `model`, a built and compiled one; returns
        the epoch to resume at, 0 for none. Called before `fit`, so that
        the data can start where the run stopped."""
        if not self.run.has_backup():
            return 0
        if model.optimizer is not None and not model.optimizer.built:
            with model.distribute_strategy.scope():
                model.optimizer.build(model.trainable_variables)
        legacy_weights.load(
            model,
            self.run.backup_weights,
            "backup",
            f"Remove {self.run.backup} to train the run from its start.",
            optimizer_state=True,
        )
        step = int(model.optimizer.iterations.numpy())
        epoch = step // self.steps_per_epoch
        print(f"Resuming from {self.run.backup}: epoch {epoch}, step {step}.")
        return epoch

    def on_epoch_end(self, epoch, logs=None):
        with io_utils.atomic_path(self.worker_dir.backup_weights) as tmp:
            self.model.save_weights(tmp)
        io_utils.write_json_atomic(
            self.worker_dir.backup_state,
            {
                "epoch": epoch + 1,
                "batch": 0,
                "step": int(self.model.optimizer.iterations.numpy()),
            },
        )
