"""Fine-tuning pretrained backbones: their own learning rate, and frozen
for the first epochs.

A head starts random, so its first gradients are large and carry little
signal; flowing back into a pretrained backbone they can undo what
ImageNet (or sentence) pretraining taught it. VSE-infinity therefore keeps
the backbone frozen for its first epochs and then trains it at a tenth of
the learning rate; VSE++ fine-tunes ResNet-152 at the main rate. Both are
gin bindings here:

    build_backbone_tower.trainable_backbone = True
    fine_tune_backbones.learning_rate_multiplier = 0.1
    fine_tune_backbones.frozen_epochs = 2

The same bindings apply to the last stages of an EfficientNet that train in
its head (`build_efficientnet_tower.fine_tuned_stages`), cached features or
not.
"""

import gin
import keras

from vse_tf import errors
from vse_tf.modeling import optimizers


@gin.configurable
def fine_tune_backbones(
    model, cache_features=False, learning_rate_multiplier=1.0, frozen_epochs=0
):
    """The callback that fine-tunes `model`'s trainable backbones, or None.

    Args:
      model: a built `DualEncoder`, compiled with a `vse_tf.modeling.optimizers`
        optimizer.
      cache_features: whether the run trains on cached backbone features
        (then no backbone trains, and these options cannot apply).
      learning_rate_multiplier: the backbones learn at this multiple of the
        learning rate (of its schedule, step by step).
      frozen_epochs: the backbones stay frozen (no gradients, batch-norm
        statistics fixed) for this many epochs, then train.
    """
    if learning_rate_multiplier == 1.0 and not frozen_epochs:
        return None
    if learning_rate_multiplier < 0 or frozen_epochs < 0:
        raise errors.UserError(
            "fine_tune_backbones.learning_rate_multiplier and frozen_epochs "
            f"must be >= 0, got {learning_rate_multiplier} and "
            f"{frozen_epochs}."
        )
    # A backbone trains unless its features are cached; the last stages
    # that a head holds (build_efficientnet_tower.fine_tuned_stages) train
    # on cached features too.
    backbones = (
        [] if cache_features else [b for b in model.backbones() if b.trainable]
    )
    backbones += [
        layer
        for tower in model.both_towers()
        for layer in getattr(tower, "fine_tuned", ())
    ]
    if not backbones:
        raise errors.UserError(
            "fine_tune_backbones is set, but no backbone trains in this run"
            + (
                " (train.cache_features = True trains the heads only)"
                if cache_features
                else ""
            )
            + ". Set the tower's "
            "trainable_backbone = True (e.g. build_backbone_tower."
            "trainable_backbone) and train.cache_features = False, or "
            "fine-tune the last stages in the head (build_efficientnet_tower"
            ".fine_tuned_stages), or drop the fine_tune_backbones bindings."
        )
    return BackboneFineTuning(
        backbones, learning_rate_multiplier, frozen_epochs
    )


class BackboneFineTuning(keras.callbacks.Callback):
    """Scales the backbones' learning rate; freezes them for the first
    `frozen_epochs` epochs.

    Freezing sets the backbones' `trainable` to False, which also runs
    their batch normalization in inference mode, and makes the model trace
    its step anew, now without their gradients; unfreezing does the
    reverse. The optimizer was built with every variable, so its state and
    checkpoints keep one layout throughout, and a resumed run freezes or
    not by its epoch alone.
    """

    def __init__(self, backbones, learning_rate_multiplier, frozen_epochs):
        super().__init__()
        self.backbones = backbones
        self.learning_rate_multiplier = learning_rate_multiplier
        self.frozen_epochs = frozen_epochs

    def on_train_begin(self, logs=None):
        optimizers.multiply_learning_rate(
            self.model.optimizer,
            [v for b in self.backbones for v in b.trainable_weights],
            self.learning_rate_multiplier,
        )

    def on_epoch_begin(self, epoch, logs=None):
        frozen = epoch < self.frozen_epochs
        if all(b.trainable != frozen for b in self.backbones):
            return  # already so
        for backbone in self.backbones:
            backbone.trainable = not frozen
        self.model.retrace_step()
        print(
            f"\nepoch {epoch + 1}: backbones "
            + (
                "frozen"
                if frozen
                else "training, at "
                f"{self.learning_rate_multiplier:g}x the learning rate"
            )
        )

    def on_train_end(self, logs=None):
        # The model leaves fit as it was built: the backbones trainable.
        if not all(b.trainable for b in self.backbones):
            for backbone in self.backbones:
                backbone.trainable = True
            self.model.retrace_step()
