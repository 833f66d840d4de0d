"""Training a dual encoder, the library behind `python -m vse_tf.train`.

`train(model_dir)` writes into model_dir:
  operative_config.gin   every gin value the run used, to repeat it
  vocabulary.txt         the text tower's words, adapted on the train split
  checkpoints/           best.weights.h5 (by validation rsum) + best.json,
                         backup/ (latest epoch with optimizer state; a rerun
                         of the same command resumes from it)
  logs/                  TensorBoard: loss, learning rate, temperature, R@K
  metrics.json           test metrics of the best checkpoint
  export/                both towers of the best checkpoint as SavedModels
                         for TF Serving (see vse_tf.export_lib)
  projector/             test images and captions for TensorBoard's
                         projector (see vse_tf.projector_lib)
  features/              with train.cache_features: the frozen backbones'
                         features of each split (see vse_tf.features)
  hubness.npz            with train.hubness_correction: its banks of train
                         embeddings (see vse_tf.hubness)
"""

import contextlib
import os
import time
import warnings

import gin
import keras
import tensorflow as tf

from vse_tf import callbacks
from vse_tf import cli
from vse_tf import compatibility
from vse_tf import distribute
from vse_tf import embed
from vse_tf import evaluation
from vse_tf import export_lib
from vse_tf import features
from vse_tf import fine_tuning
from vse_tf import hubness
from vse_tf import io_utils
from vse_tf import optimizers
from vse_tf import projector_lib
from vse_tf.callbacks import BEST_WEIGHTS
from vse_tf.data import pipeline
from vse_tf.models import dual_encoder
from vse_tf.models import pretrained_towers
from vse_tf.models import text_towers

VOCABULARY = "vocabulary.txt"
METRICS = "metrics.json"
PRECISIONS = (None, "float32", "mixed_float16", "mixed_bfloat16")


def load_or_build_vocabulary(model_dir, output_dir, train_captions,
                             max_tokens):
    """The run's vocabulary: read back on resume, else adapted and saved.

    Every worker of a multi-worker run adapts the same vocabulary from the
    same data; only the chief's output_dir is the model dir.
    """
    path = os.path.join(model_dir, VOCABULARY)
    if os.path.exists(path):
        return text_towers.load_vocabulary(path)
    vocabulary = text_towers.build_vocabulary(train_captions, max_tokens)
    text_towers.save_vocabulary(vocabulary,
                                os.path.join(output_dir, VOCABULARY))
    return vocabulary


def build_model(vocabulary, loss=None, global_batch_size=None):
    """The dual encoder as gin configures it, built and compiled."""
    return _built_and_compiled(dual_encoder.build_dual_encoder(vocabulary),
                               loss, global_batch_size)


def _built_and_compiled(model, loss, global_batch_size):
    model(model.dummy_inputs())  # creates the weights before any restore
    heads = getattr(loss, "projection_heads", 1)
    for tower in (model.image_tower, model.text_tower) if loss else ():
        joined = pretrained_towers.count_projection_heads(tower)
        if joined != heads:
            raise cli.UserError(
                f"The loss scores {heads} projection head(s) "
                f"({type(loss).__name__}.projection_heads), but the "
                f"{tower.name} joins {joined}: bind "
                "both towers' projection_heads and the loss's to one value "
                "(a gin macro, as gin/flickr8k.gin does).")
    model.compile(optimizer=optimizers.make_optimizer(
        global_batch_size=global_batch_size), loss=loss)
    return model


def write_operative_config(model_dir):
    io_utils.write_text_atomic(
        os.path.join(model_dir, cli.OPERATIVE_CONFIG),
        gin.operative_config_str())


@gin.configurable
def train(model_dir,
          data_dir=None,
          dataset="shapes",
          epochs=10,
          steps_per_epoch=None,
          batch_size=128,
          loss=gin.REQUIRED,
          max_vocabulary=10_000,
          seed=0,
          mixed_precision=None,
          jit_compile=False,
          cache_features=False,
          feature_dir=None,
          export=True,
          projector_images=500,
          hubness_correction=None,
          deterministic=False):
    """Trains, validates each epoch, and scores the best checkpoint on test.

    Args:
      model_dir: output folder (see the module docstring).
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
      loss: a `vse_tf.losses` objective.
      max_vocabulary: size of the text tower's vocabulary.
      seed: seeds weights and data order.
      mixed_precision: None (float32), "mixed_float16" (GPUs; with dynamic
        loss scaling) or "mixed_bfloat16" (TPUs, recent GPUs and CPUs).
        Variables, embeddings and losses stay float32.
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

    Returns:
      The test metrics, as in metrics.json (None on a non-chief worker).
    """
    started = time.time()
    # First: a multi-worker strategy must set up collectives before
    # TensorFlow runs anything.
    strategy = distribute.get_strategy()
    distribute.check_batch_size(batch_size, strategy)
    cli.ensure_writable_dir(model_dir)
    train_examples = pipeline.load_examples(dataset, "train", data_dir)
    val_examples = pipeline.load_examples(dataset, "val", data_dir)
    # At least: COCO's train split may keep 5 to 7 captions an image.
    pairs = int(train_examples.cardinality()) * (
        train_examples.element_spec["captions"].shape[0] or 5)
    if batch_size > pairs:
        raise cli.UserError(
            f"train.batch_size = {batch_size} is larger than the train split "
            f"of {dataset!r}, which has {pairs} image-caption pairs; one "
            "batch would repeat pairs. Use a batch of at most that size.")
    if steps_per_epoch is None:
        steps_per_epoch = max(pairs // batch_size, 1)
    if hubness_correction is not None:
        # Before training, not after it.
        hubness_correction.check_bank_size(
            int(train_examples.cardinality()))

    with distribute.WorkerDir(model_dir, strategy) as worker, \
            _precision_policy(mixed_precision):
        train_captions = pipeline.load_captions(dataset, "train", data_dir)
        vocabulary = load_or_build_vocabulary(model_dir, worker.path,
                                              train_captions, max_vocabulary)
        # Seeded here, after the data is ready: generating a dataset on
        # first use draws from the global random state, and would give the
        # first run on a new data dir other initial weights than the rest.
        keras.utils.set_random_seed(seed)
        if deterministic:
            tf.config.experimental.enable_op_determinism()
        with strategy.scope():
            model = build_model(vocabulary, loss,
                                global_batch_size=batch_size)
        try:
            # Checked here, before any feature extraction.
            model.compile_step(jit_compile)
        except ValueError as error:
            raise cli.UserError(f"train.jit_compile = True: {error} Set it "
                                "to False for this run.") from error
        _log_caption_lengths(train_captions, model)
        fine_tuner = fine_tuning.fine_tune_backbones(model, cache_features)
        # What fit trains: the model, or only its heads on cached features.
        trained = model
        if cache_features:
            feature_dir = feature_dir or os.path.join(worker.path,
                                                      "features")
            train_examples, val_examples = (
                features.cached_examples(model, examples, split, feature_dir)
                for split, examples in (("train", train_examples),
                                        ("val", val_examples)))
            with strategy.scope():
                trained = head_model(model, loss, batch_size)
        if trained is not model:
            trained.compile_step(jit_compile)
        # Every worker reads the chief's checkpoints to resume, and writes
        # its own.
        checkpoint_dir = os.path.join(worker.path, "checkpoints")
        backup_dir = os.path.join(model_dir, "checkpoints", "backup")
        compatibility.check_model_dir(model_dir, os.path.exists(backup_dir))
        write_operative_config(worker.path)
        print(f"Training on {dataset} with {type(loss).__name__}: {epochs} "
              f"epochs x {steps_per_epoch} steps of {batch_size} pairs, "
              f"{strategy.num_replicas_in_sync} replica(s).")

        backup = callbacks.BackupAndRestore(
            backup_dir, steps_per_epoch,
            write_dir=os.path.join(checkpoint_dir, "backup"))
        # A resumed run starts the data at the epoch it resumes, in the
        # order a run never stopped would see it.
        first_epoch = backup.restore(trained)
        # Keras warns that fit's shuffle does not apply to a tf.data input;
        # the pipeline shuffles images and pairs itself.
        warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
        trained.fit(
            pipeline.training_pairs(train_examples, batch_size, seed=seed,
                                    steps_per_epoch=steps_per_epoch,
                                    first_epoch=first_epoch,
                                    epochs=epochs),
            epochs=epochs, steps_per_epoch=steps_per_epoch,
            initial_epoch=first_epoch,
            callbacks=[
                # Raises before any epoch-end callback can save broken
                # weights.
                callbacks.StopOnNonFiniteLoss(checkpoint_dir),
                *([fine_tuner] if fine_tuner else []),
                # Before the rest, so that they log its val metrics.
                callbacks.RetrievalValidation(val_examples, checkpoint_dir),
                backup,
                keras.callbacks.TensorBoard(os.path.join(worker.path,
                                                         "logs")),
            ],
            verbose=2 if os.environ.get("VSE_TF_QUIET_PROGRESS") else "auto")
        if not worker.is_chief:
            return None
        return _finish(model, trained, model_dir, dataset, data_dir,
                       feature_dir, export, projector_images,
                       hubness_correction, train_examples, started)


def head_model(model, loss, global_batch_size):
    """The model's heads, compiled to train on cached backbone features."""
    return _built_and_compiled(model.head_model(), loss, global_batch_size)


def _finish(model, trained, model_dir, dataset, data_dir, feature_dir,
            export, projector_images, correction, train_examples, started):
    """Test metrics, export and projector of the best checkpoint.

    `train_examples` are what `trained` trained on (cached features for
    heads): the hubness correction's banks are their embeddings.
    """
    trained.load_weights(os.path.join(model_dir, "checkpoints",
                                      BEST_WEIGHTS))
    test_examples = pipeline.load_examples(dataset, "test", data_dir)
    if correction is not None:
        correction.fit(trained, train_examples)
        correction.save(os.path.join(model_dir, hubness.BANKS))
    scored = test_examples
    if trained is not model:  # heads on cached features
        scored = features.cached_examples(model, test_examples, "test",
                                          feature_dir)
    metrics = embed.evaluate_model(trained, scored, correction=correction)
    io_utils.write_json_atomic(os.path.join(model_dir, METRICS), metrics)
    write_operative_config(model_dir)
    if export:
        export_dir = os.path.join(model_dir, "export")
        version = export_lib.export_towers(model, export_dir,
                                           correction=correction)
        print(f"Exported both towers to {export_dir} (version {version}).")
    if projector_images:
        projector_lib.write_projector(
            model, test_examples, os.path.join(model_dir, "projector"),
            projector_images)
    title = (f"\nTest metrics of the best checkpoint ({dataset}, "
             f"{time.time() - started:.0f} s)")
    if correction is not None:
        print(evaluation.format_table(metrics["cosine"],
                                      title=title + ", cosine:"))
        title = (f"With the hubness correction (k = {correction.neighbours}"
                 f", weight {correction.weight:g})")
    print(evaluation.format_table(metrics, title=title + ":"))
    return metrics


@contextlib.contextmanager
def _precision_policy(name):
    """Keras's global dtype policy for the models built inside."""
    if name not in PRECISIONS:
        raise cli.UserError(
            f"Unknown train.mixed_precision {name!r}; use None, "
            "'mixed_float16' or 'mixed_bfloat16'.")
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name or "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _log_caption_lengths(train_captions, model):
    if model.tokenizer is None:
        return  # a pretrained tokenizer: its own length rules
    max_length = model.tokenizer.output_shape[-1]
    cut, empty, total = text_towers.count_long_captions(
        train_captions, max_length)
    if cut or empty:
        print(f"Train captions: {cut} of {total} ({100 * cut / total:.1f}%) "
              f"are longer than {max_length - 1} words and are cut there "
              f"(build_text_tower.max_length = {max_length}); {empty} are "
              "empty and embed as the start token alone.")
