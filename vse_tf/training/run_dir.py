"""The run folder: every file a training run writes, named in one place.

    operative_config.gin   every gin value the run used, to repeat it
    run.json               what later tools need to know without gin: the
                           dataset, whether heads trained on cached
                           features, the versions that trained it
    vocabulary.txt         the text tower's words, adapted on the train split
    checkpoints/           best.weights.h5 (by validation rsum, its record
                           inside) + best.json (a copy of the record),
                           backup/ (latest epoch with optimizer state; a
                           rerun of the same command resumes from it)
    logs/                  TensorBoard: loss, learning rate, temperature, R@K
    history.csv            one row an epoch: loss, learning rate, val R@K
    metrics.json           test metrics of the best checkpoint
    export/                both towers as SavedModels for TF Serving
    projector/             test embeddings for TensorBoard's projector
    features/              with train.cache_features: the frozen backbones'
                           features of each split
    hubness.npz            with train.hubness_correction: its banks

Programs and library modules ask a `RunDir` for a path instead of joining
names of their own, so the layout above is the whole contract.
"""

import json
import os

from vse_tf import errors
from vse_tf import io_utils

OPERATIVE_CONFIG = "operative_config.gin"
RUN_INFO = "run.json"
VOCABULARY = "vocabulary.txt"
METRICS = "metrics.json"
CHECKPOINTS = "checkpoints"
BEST_WEIGHTS = "best.weights.h5"
BEST_STATE = "best.json"
BACKUP = "backup"
# As Keras's own BackupAndRestore names them.
BACKUP_WEIGHTS = "latest.weights.h5"
BACKUP_STATE = "training_metadata.json"
LOGS = "logs"
HISTORY = "history.csv"
EXPORT = "export"
PROJECTOR = "projector"
FEATURES = "features"
HUBNESS_BANKS = "hubness.npz"


class RunDir:
    """The paths of one run folder (nothing is created until written)."""

    def __init__(self, path):
        self.path = path

    def _join(self, *names):
        return os.path.join(self.path, *names)

    @property
    def operative_config(self):
        return self._join(OPERATIVE_CONFIG)

    @property
    def run_info(self):
        return self._join(RUN_INFO)

    @property
    def vocabulary(self):
        return self._join(VOCABULARY)

    @property
    def history(self):
        return self._join(HISTORY)

    @property
    def metrics(self):
        return self._join(METRICS)

    def evaluation_metrics(self, split, folds=1, protocol=None):
        """The metrics file of `python -m vse_tf.evaluate`: metrics.json
        for the test split's full set, else named by what was scored."""
        if protocol:
            return self._join(f"metrics_{protocol}.json")
        if split == "test" and folds == 1:
            return self.metrics
        return self._join(f"metrics_{split}_{folds}fold.json")

    @property
    def checkpoints(self):
        return self._join(CHECKPOINTS)

    @property
    def best_weights(self):
        return self._join(CHECKPOINTS, BEST_WEIGHTS)

    @property
    def best_state(self):
        return self._join(CHECKPOINTS, BEST_STATE)

    @property
    def backup(self):
        return self._join(CHECKPOINTS, BACKUP)

    @property
    def backup_weights(self):
        return self._join(CHECKPOINTS, BACKUP, BACKUP_WEIGHTS)

    @property
    def backup_state(self):
        return self._join(CHECKPOINTS, BACKUP, BACKUP_STATE)

    @property
    def logs(self):
        return self._join(LOGS)

    @property
    def validation_logs(self):
        """Where Keras's TensorBoard callback logs the epochs' val R@K."""
        return self._join(LOGS, "validation")

    @property
    def export(self):
        return self._join(EXPORT)

    @property
    def projector(self):
        return self._join(PROJECTOR)

    @property
    def features(self):
        return self._join(FEATURES)

    @property
    def hubness_banks(self):
        return self._join(HUBNESS_BANKS)

    def is_run(self):
        return os.path.exists(self.operative_config)

    def has_backup(self):
        """Whether a rerun resumes: the backup's weights exist (they hold
        the step it resumes at; the metadata beside them follows them)."""
        return os.path.exists(self.backup_weights)

    def backed_up_epochs(self):
        """The epochs the backup holds (a rerun resumes after them); 0
        without a backup."""
        try:
            return int(io_utils.read_json(self.backup_state)["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def write_run_info(self, info):
        io_utils.write_json_atomic(self.run_info, info)

    def read_run_info(self):
        """run.json's facts; {} for a run written before it existed."""
        if not os.path.exists(self.run_info):
            return {}
        try:
            with open(self.run_info, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError) as error:
            raise errors.UserError(
                f"Cannot read {self.run_info!r} ({error}). It is written at "
                "train time; rerun the training command to write it "
                "again."
            ) from error
