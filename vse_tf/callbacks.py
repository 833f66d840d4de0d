"""Per-epoch retrieval validation and the best checkpoint it selects."""

import os

import keras

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
