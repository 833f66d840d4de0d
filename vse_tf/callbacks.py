"""Callbacks of a training run: validation, backup, divergence guard."""

import math
import os

import keras

from vse_tf import cli
from vse_tf import embed
from vse_tf import io_utils

BEST_WEIGHTS = "best.weights.h5"
BEST_STATE = "best.json"


class RetrievalValidation(keras.callbacks.Callback):
    """Scores the validation split each epoch; keeps the best by rsum.

    Adds `val_<metric>` and `learning_rate` to the epoch logs, so callbacks
    after this one (TensorBoard, early stopping) see them. The best weights
    are written atomically to `checkpoint_dir/best.weights.h5`, with the
    epoch and metrics beside them in `best.json`, which also lets a resumed
    run keep the best it had.
    """

    def __init__(self, examples, checkpoint_dir, folds=1):
        super().__init__()
        self.examples = examples
        self.checkpoint_dir = checkpoint_dir
        self.folds = folds
        self.best_rsum = -1.0
        state = os.path.join(checkpoint_dir, BEST_STATE)
        if os.path.exists(state):
            self.best_rsum = io_utils.read_json(state)["val_rsum"]

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        metrics = embed.evaluate_model(self.model, self.examples, self.folds)
        logs.update({f"val_{name}": value for name, value in metrics.items()})
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(
            self.model.optimizer.learning_rate))
        if metrics["rsum"] > self.best_rsum:
            self.best_rsum = metrics["rsum"]
            with io_utils.atomic_path(os.path.join(
                    self.checkpoint_dir, BEST_WEIGHTS)) as tmp:
                self.model.save_weights(tmp)
            io_utils.write_json_atomic(
                os.path.join(self.checkpoint_dir, BEST_STATE),
                {"epoch": epoch + 1, **{f"val_{k}": v
                                        for k, v in metrics.items()}})
        print(f"\nepoch {epoch + 1}: val rsum {metrics['rsum']:.1f} "
              f"(i2t R@1 {metrics['i2t_r1']:.1f}, t2i R@1 "
              f"{metrics['t2i_r1']:.1f}; best {self.best_rsum:.1f})")


class TrainingDiverged(cli.UserError):
    """The loss became NaN or infinite; the message names the step."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops the run at the first step whose loss is NaN or infinite.

    It raises at once, inside the step's callbacks, so that no epoch-end
    callback (validation, backup) ever sees the broken weights: the best
    checkpoint and the backup stay those of the last good epoch.
    """

    def __init__(self, checkpoint_dir):
        super().__init__()
        self.checkpoint_dir = checkpoint_dir
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        step = int(self.model.optimizer.iterations.numpy())
        state = os.path.join(self.checkpoint_dir, BEST_STATE)
        kept = (f"The best checkpoint is unchanged: epoch "
                f"{io_utils.read_json(state)['epoch']} in "
                f"{self.checkpoint_dir}." if os.path.exists(state) else
                "No epoch finished, so there is no checkpoint.")
        raise TrainingDiverged(
            f"Training stopped at step {step} (epoch {self.epoch + 1}, batch "
            f"{batch + 1}): the loss is {float(loss)}. {kept} Lower the "
            "learning rate, set make_optimizer.global_clipnorm, or check "
            "the inputs of that step.")


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras's epoch backup, made safe against a kill at any moment.

    Keras writes the weights file, then the epoch file, both in place: a kill
    in between leaves a truncated file or an epoch that does not match the
    weights. Here each file is written to a temporary name and renamed, and
    a restore takes the epoch from the optimizer's step count stored with
    the weights, so the two can never disagree.

    Every worker of a multi-worker run restores from `backup_dir` (the
    chief's), so all resume at the same step; each writes to its own
    `write_dir` (the chief's is `backup_dir`).
    """

    def __init__(self, backup_dir, steps_per_epoch, write_dir=None):
        super().__init__(backup_dir, save_freq="epoch",
                         delete_checkpoint=False)
        self.steps_per_epoch = steps_per_epoch
        self.write_dir = write_dir or backup_dir
        self._restored = False

    def restore(self, model):
        """Loads the backup into `model` now, before `fit` (which then
        loads nothing more); returns the epoch to resume at, 0 for none.
        The trainer needs it first, to start the data where it stopped."""
        self.set_model(model)
        with model.distribute_strategy.scope():
            super().on_train_begin()
        self._restored = True
        return model._initial_epoch or 0

    def on_train_begin(self, logs=None):
        if not self._restored:
            super().on_train_begin(logs)

    def _save_model(self):
        os.makedirs(self.write_dir, exist_ok=True)
        with io_utils.atomic_path(os.path.join(
                self.write_dir, os.path.basename(self._weights_path))) as tmp:
            self.model.save_weights(tmp)
        io_utils.write_json_atomic(
            os.path.join(self.write_dir,
                         os.path.basename(self._training_metadata_path)),
            {"epoch": self._current_epoch, "batch": 0,
             "step": int(self.model.optimizer.iterations.numpy())})

    def _load_model(self):
        super()._load_model()
        if os.path.exists(self._weights_path):
            step = int(self.model.optimizer.iterations.numpy())
            self.model._initial_epoch = step // self.steps_per_epoch
            print(f"Resuming from {self.backup_dir}: epoch "
                  f"{self.model._initial_epoch}, step {step}.")
