"""The settings of a training run: `train`'s gin keywords, as one object.

Gin files bind `train.<keyword>` (`train.epochs = 30`); `run_settings`
is the configurable of that name, and packs what gin gives it into one
frozen `RunSettings`, which checks itself as it is made and writes itself
into run.json. Every step of `vse_tf.training.trainer` takes it whole.

This module imports no trainer, so a program that parses a run's
configuration to load its model (evaluate, export, projector) does not
import one either.
"""

import dataclasses

import gin
import keras
import tensorflow as tf

import vse_tf
from vse_tf import errors
from vse_tf.training import precision


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What a training run does; see `run_settings` for each field (the
    gin keyword `dataset` is `dataset_name` here)."""

    model_dir: str
    data_dir: str | None
    dataset_name: str
    epochs: int
    steps_per_epoch: int | None
    batch_size: int
    microbatch_size: int | None
    loss: keras.losses.Loss
    max_vocabulary: int
    seed: int
    mixed_precision: str | None
    jit_compile: bool
    cache_features: bool
    feature_dir: str | None
    export: bool
    projector_images: int
    hubness_correction: object
    deterministic: bool
    init_from: str | None

    def __post_init__(self):
        self.check()

    def check(self):
        """A UserError naming the first setting out of its range."""
        for name, minimum in (
            ("epochs", 1),
            ("steps_per_epoch", 1),
            ("batch_size", 1),
            ("microbatch_size", 1),
            ("max_vocabulary", 2),
            ("projector_images", 0),
            ("seed", 0),
        ):
            errors.check_number(
                f"train.{name}",
                getattr(self, name),
                minimum=minimum,
                integer=True,
                # None: one pass an epoch; the whole batch at once.
                none=name in ("steps_per_epoch", "microbatch_size"),
            )
        errors.check_choice(
            "train.mixed_precision", self.mixed_precision, precision.CHOICES
        )

    def run_info(self, steps_per_epoch, policy, warm_start=None, data=None):
        """run.json's facts: what later tools need to know without gin.

        `steps_per_epoch` is the one the run takes (this object's may be
        None), `policy` the dtype policy it trains in, `warm_start` what
        it took from `init_from`, `data` what the source says of the data
        (a caption file's split)."""
        return {
            "dataset": self.dataset_name,
            "cache_features": self.cache_features,
            "feature_dir": self.feature_dir,
            "epochs": self.epochs,
            "steps_per_epoch": steps_per_epoch,
            "batch_size": self.batch_size,
            "microbatch_size": self.microbatch_size,
            "seed": self.seed,
            "mixed_precision": policy,
            "hubness_correction": self.hubness_correction is not None,
            "versions": {
                "vse_tf": vse_tf.__version__,
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
            },
            **({"warm_start": warm_start} if warm_start else {}),
            **({"data": data} if data else {}),
        }


@gin.configurable("train")
def run_settings(
    model_dir,
    data_dir=None,
    dataset="shapes",
    epochs=10,
    steps_per_epoch=None,
    batch_size=128,
    microbatch_size=None,
    loss=gin.REQUIRED,
    max_vocabulary=10_000,
    seed=0,
    mixed_precision="auto",
    jit_compile=False,
    cache_features=False,
    feature_dir=None,
    export=True,
    projector_images=500,
    hubness_correction=None,
    deterministic=False,
    init_from=None,
):
    """The run's settings, as gin binds `train.<keyword>`, checked.

    Args:
      model_dir: the run's folder (see `vse_tf.training.run_dir`).
      data_dir: dataset root; None is TFDS's default.
      dataset: a name `pipeline.load_examples` knows: "shapes" (built in),
        "flickr8k" / "flickr30k" / "coco" (raw images, Karpathy's files),
        "coco_captions" and "karpathy_captions/flickr30k" (TFDS),
        "coco_precomp" / "f30k_precomp" (precomputed features).
      epochs: passes, each of `steps_per_epoch` steps.
      steps_per_epoch: None is one pass over every caption of the train
        split.
      batch_size: global batch (image-caption pairs), split evenly over the
        replicas of all workers.
      microbatch_size: None computes each replica's share of the batch at
        once; m computes it m pairs at a time (gradient caching,
        `vse_tf.models.gradient_cache`): the same loss and gradients, for
        one more forward pass, in the memory of m pairs. m divides the
        batch of a replica (batch_size / replicas).
      loss: a `vse_tf.losses` objective.
      max_vocabulary: size of the text tower's vocabulary.
      seed: seeds weights and data order.
      mixed_precision: "auto" (bfloat16 where the hardware computes it,
        else float32: see `vse_tf.training.precision`), None or "float32",
        "mixed_float16" (GPUs; with dynamic loss scaling) or
        "mixed_bfloat16". Variables, embeddings and losses stay float32.
      jit_compile: run each step's towers, loss and gradients as one XLA
        program (one replica per process).
      cache_features: train only the towers' heads, on features of their
        frozen backbones computed once (towers from
        `vse_tf.models.pretrained_towers`).
      feature_dir: where those features are stored; None is
        model_dir/features. Runs that share backbones and data may share it.
      export: whether to export the best checkpoint's towers to
        model_dir/export at the end (as a new version).
      projector_images: test images (with their captions) written for
        TensorBoard's projector at the end; 0 writes none.
      hubness_correction: a `hubness.HubnessCorrection` to fit on the train
        split's embeddings of the best checkpoint (model_dir/hubness.npz):
        the test metrics are then those of its corrected scores (the
        cosine ones under "cosine"), and the exported towers serve it.
      deterministic: run TensorFlow's ops deterministically
        (`tf.config.experimental.enable_op_determinism`): two runs with
        one seed, or a run killed and resumed, end with the same weights
        to the bit, at some cost in speed. Without it they agree to float
        rounding, which training can amplify.
      init_from: warm start: a run folder (its best checkpoint) or a
        .weights.h5 file whose weights are loaded where their place and
        shape match this model's; the rest keep their initialization, and
        the optimizer starts fresh (see `warm_start`). A resumed run takes
        its own backup instead.
    """
    return RunSettings(
        model_dir=model_dir,
        data_dir=data_dir,
        dataset_name=dataset,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        batch_size=batch_size,
        microbatch_size=microbatch_size,
        loss=loss,
        max_vocabulary=max_vocabulary,
        seed=seed,
        mixed_precision=mixed_precision,
        jit_compile=jit_compile,
        cache_features=cache_features,
        feature_dir=feature_dir,
        export=export,
        projector_images=projector_images,
        hubness_correction=hubness_correction,
        deterministic=deterministic,
        init_from=init_from,
    )
