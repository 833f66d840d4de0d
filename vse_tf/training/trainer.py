"""Training a dual encoder, the library behind `python -m vse_tf.train`.

`train(model_dir)` runs four named steps, each a function of its own:

    prepare_data   the splits, the steps of an epoch, the checks on them
    build          the vocabulary, the model (and its heads on cached
                   features), compiled under the run's strategy
    fit            Keras's fit, resumed from the run's backup if it has one
    finish         test metrics, export and projector of the best checkpoint

and writes the run folder of `vse_tf.training.run_dir`.
"""

import dataclasses
import os
import time
import warnings

import gin
import keras
import tensorflow as tf

import vse_tf
from vse_tf import errors
from vse_tf import evaluation
from vse_tf import io_utils
from vse_tf.data import pipeline
from vse_tf.evaluation import embedding
from vse_tf.models import dual_encoder
from vse_tf.models import text_towers
from vse_tf.serving import projector
from vse_tf.serving import saved_model
from vse_tf.training import callbacks
from vse_tf.training import distribute
from vse_tf.training import features
from vse_tf.training import fine_tuning
from vse_tf.training import legacy_weights
from vse_tf.training import optimizers
from vse_tf.training import precision
from vse_tf.training import resume
from vse_tf.training import run_dir
from vse_tf.training import warm_start


def load_or_build_vocabulary(run, output, train_captions, max_tokens):
    """The run's vocabulary: read back on resume, else adapted and saved.

    Every worker of a multi-worker run adapts the same vocabulary from the
    same data; only the chief's `output` is the run's folder.
    """
    if os.path.exists(run.vocabulary):
        return text_towers.load_vocabulary(run.vocabulary)
    vocabulary = text_towers.build_vocabulary(train_captions, max_tokens)
    text_towers.save_vocabulary(vocabulary, output.vocabulary)
    return vocabulary


def build_model(
    vocabulary, loss=None, global_batch_size=None, total_steps=None
):
    """The dual encoder as gin configures it, built and compiled; a
    training run passes its `total_steps` for a schedule that spans the
    run (`optimizers.CosineDecayOverRun`)."""
    model = dual_encoder.build_dual_encoder(vocabulary)
    if loss is not None:
        check_projection_heads(model, loss)
    return _built_and_compiled(model, loss, global_batch_size, total_steps)


def check_projection_heads(model, loss):
    """A UserError unless both towers join as many projection heads as
    the loss scores."""
    heads = getattr(loss, "projection_heads", 1)
    for tower in model.both_towers():
        joined = getattr(tower, "projection_heads", 1)
        if joined != heads:
            raise errors.UserError(
                f"The loss scores {heads} projection head(s) "
                f"({type(loss).__name__}.projection_heads), but the "
                f"{tower.name} joins {joined}: bind both towers' "
                "projection_heads and the loss's to one value (a gin "
                "macro, as gin/flickr8k.gin does)."
            )


def _built_and_compiled(model, loss, global_batch_size, total_steps=None):
    model(model.dummy_inputs())  # creates the weights before any restore
    model.compile(
        optimizer=optimizers.make_optimizer(
            global_batch_size=global_batch_size, total_steps=total_steps
        ),
        loss=loss,
    )
    return model


def write_operative_config(run):
    io_utils.write_text_atomic(run.operative_config, gin.operative_config_str())


@gin.configurable
def train(
    model_dir,
    data_dir=None,
    dataset="shapes",
    epochs=10,
    steps_per_epoch=None,
    batch_size=128,
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
    """Trains, validates each epoch, and scores the best checkpoint on test.

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

    Returns:
      The test metrics, as in metrics.json (None on a non-chief worker).
    """
    started = time.time()
    check_run_settings(
        epochs,
        steps_per_epoch,
        batch_size,
        max_vocabulary,
        projector_images,
        mixed_precision,
        seed,
    )
    # First: a multi-worker strategy must set up collectives before
    # TensorFlow runs anything.
    strategy = distribute.get_strategy()
    distribute.check_batch_size(batch_size, strategy)
    arithmetic = precision.choose(mixed_precision)
    with (
        distribute.WorkerDir(model_dir, strategy) as worker,
        precision.policy(arithmetic.policy),
    ):
        # Until training starts, a user error leaves no new folder behind.
        with io_utils.removed_on_user_error(model_dir):
            io_utils.ensure_writable_dir(model_dir)
            # The optimizer's settings, checked before any data is read.
            optimizers.make_optimizer(global_batch_size=batch_size)
            data = prepare_data(
                dataset,
                data_dir,
                batch_size,
                steps_per_epoch,
                hubness_correction,
            )
            run = run_dir.RunDir(model_dir)
            rerun = run.is_run()
            output = run_dir.RunDir(worker.path)
            vocabulary = load_or_build_vocabulary(
                run, output, data.captions, max_vocabulary
            )
            # Seeded here, after the data is ready: generating a dataset on
            # first use draws from the global random state, and would give
            # the first run on a new data dir other initial weights than
            # the rest.
            keras.utils.set_random_seed(seed)
            if deterministic:
                tf.config.experimental.enable_op_determinism()
            model = build(
                vocabulary,
                loss,
                batch_size,
                jit_compile,
                cache_features,
                feature_dir or output.features,
                data,
                strategy,
                epochs * data.steps_per_epoch,
            )
            # Resumable only with the model and data the backup holds.
            resume.check_backup(run, model.trained, dataset, cache_features)
            if rerun and not run.has_backup():
                print(
                    f"{model_dir} holds no backup yet (the first is "
                    "written when an epoch ends): training starts from "
                    "epoch 1."
                )
            warm = (
                None
                if init_from is None
                else _warm_start(model.trained, init_from, run)
            )
            write_operative_config(output)
            output.write_run_info(
                {
                    **_run_info(
                        dataset,
                        cache_features,
                        feature_dir,
                        epochs,
                        data.steps_per_epoch,
                        batch_size,
                        seed,
                        arithmetic.policy,
                        hubness_correction,
                    ),
                    **({"warm_start": warm} if warm else {}),
                }
            )
        print(
            f"Training on {dataset} with {type(loss).__name__}: "
            f"{_count(epochs, 'epoch')} x "
            f"{_count(data.steps_per_epoch, 'step')} of {batch_size} "
            f"pairs, {_count(strategy.num_replicas_in_sync, 'replica')}, in "
            f"{arithmetic.policy} ({arithmetic.reason})"
        )
        fit(model, data, run, output, epochs, batch_size, seed)
        if arithmetic.policy != "float32":
            # Every worker: variables made under a multi-worker strategy
            # are broadcast from the chief.
            model = in_float32(model, vocabulary, loss, batch_size, strategy)
        if not worker.is_chief:
            return None
        return finish(
            model,
            run,
            dataset,
            data_dir,
            export,
            projector_images,
            hubness_correction,
            data,
            started,
        )


def _count(number, noun):
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _warm_start(trained, init_from, run):
    """The warm start's record for run.json: the base, and what each tower
    took from it; None when the run resumes from its own backup."""
    if run.has_backup():
        print(
            f"train.init_from = {init_from!r} is not loaded: the run "
            "resumes from its own backup."
        )
        return run.read_run_info().get("warm_start")
    report = warm_start.warm_start(trained, init_from)
    print(report)
    return {"from": init_from, **report.towers}


def check_run_settings(
    epochs,
    steps_per_epoch,
    batch_size,
    max_vocabulary,
    projector_images,
    mixed_precision,
    seed,
):
    """A UserError naming the first `train` setting out of its range."""
    errors.check_number("train.epochs", epochs, minimum=1, integer=True)
    errors.check_number(
        "train.steps_per_epoch",
        steps_per_epoch,
        minimum=1,
        integer=True,
        none=True,
    )
    errors.check_number("train.batch_size", batch_size, minimum=1, integer=True)
    errors.check_number(
        "train.max_vocabulary", max_vocabulary, minimum=2, integer=True
    )
    errors.check_number(
        "train.projector_images", projector_images, minimum=0, integer=True
    )
    errors.check_choice(
        "train.mixed_precision", mixed_precision, precision.CHOICES
    )
    errors.check_number("train.seed", seed, minimum=0, integer=True)


def _run_info(
    dataset,
    cache_features,
    feature_dir,
    epochs,
    steps_per_epoch,
    batch_size,
    seed,
    mixed_precision,
    hubness_correction,
):
    return {
        "dataset": dataset,
        "cache_features": cache_features,
        "feature_dir": feature_dir,
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": batch_size,
        "seed": seed,
        "mixed_precision": mixed_precision,
        "hubness_correction": hubness_correction is not None,
        "versions": {
            "vse_tf": vse_tf.__version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
    }


@dataclasses.dataclass
class TrainingData:
    """What `prepare_data` gives the other steps. `train` and `val` are
    examples, replaced by cached features when heads train alone; `test`
    stays examples."""

    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset
    captions: tf.data.Dataset
    steps_per_epoch: int


def prepare_data(
    dataset, data_dir, batch_size, steps_per_epoch=None, hubness_correction=None
):
    """The three splits, and the steps of an epoch; a UserError for data
    that is missing or broken (the test split's too, checked before any
    training), or a batch or correction the data cannot fill."""
    train_examples, val_examples, test_examples = (
        pipeline.load_examples(dataset, split, data_dir)
        for split in ("train", "val", "test")
    )
    # At least: COCO's train split may keep 5 to 7 captions an image.
    pairs = int(train_examples.cardinality()) * (
        train_examples.element_spec["captions"].shape[0] or 5
    )
    if batch_size > pairs:
        raise errors.UserError(
            f"train.batch_size = {batch_size} is larger than the train split "
            f"of {dataset!r}, which has {pairs} image-caption pairs; one "
            "batch would repeat pairs. Use a batch of at most that size."
        )
    if hubness_correction is not None:
        # Before training, not after it.
        hubness_correction.check_bank_size(int(train_examples.cardinality()))
    return TrainingData(
        train_examples,
        val_examples,
        test_examples,
        pipeline.load_captions(dataset, "train", data_dir),
        steps_per_epoch or max(pairs // batch_size, 1),
    )


@dataclasses.dataclass
class Models:
    """What `build` gives: the dual encoder, and what `fit` trains (the
    encoder itself, or its heads on cached features)."""

    encoder: dual_encoder.DualEncoder
    trained: dual_encoder.DualEncoder
    fine_tuner: keras.callbacks.Callback = None
    feature_dir: str = None


def build(
    vocabulary,
    loss,
    batch_size,
    jit_compile,
    cache_features,
    feature_dir,
    data,
    strategy,
    total_steps,
):
    """The compiled model; with `cache_features`, also its heads, and
    `data` then holds the backbones' features in place of the splits."""
    with strategy.scope():
        encoder = build_model(
            vocabulary,
            loss,
            global_batch_size=batch_size,
            total_steps=total_steps,
        )
    try:
        # Checked here, before any feature extraction.
        encoder.compile_step(jit_compile)
    except ValueError as error:
        raise errors.UserError(
            f"train.jit_compile = True: {error} Set it to False for this run."
        ) from error
    _log_caption_lengths(data.captions, encoder)
    model = Models(
        encoder,
        encoder,
        fine_tuning.fine_tune_backbones(encoder, cache_features),
    )
    if cache_features:
        model.feature_dir = feature_dir
        data.train, data.val = (
            features.cached_examples(encoder, examples, split, feature_dir)
            for split, examples in (("train", data.train), ("val", data.val))
        )
        with strategy.scope():
            model.trained = head_model(encoder, loss, batch_size, total_steps)
        model.trained.compile_step(jit_compile)
    return model


def fit(model, data, run, output, epochs, batch_size, seed):
    """Keras's fit with the run's callbacks, from the epoch the backup
    holds (0 without one).

    Every worker reads the chief's backup (`run`) to resume, and writes
    its own checkpoints (`output`).
    """
    backup = callbacks.BackupAndRestore(
        run.backup, data.steps_per_epoch, write_dir=output.backup
    )
    # A resumed run starts the data at the epoch it resumes, in the
    # order a run never stopped would see it.
    first_epoch = backup.restore(model.trained)
    # Keras warns that fit's shuffle does not apply to a tf.data input;
    # the pipeline shuffles images and pairs itself.
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
    model.trained.fit(
        pipeline.training_pairs(
            data.train,
            batch_size,
            seed=seed,
            steps_per_epoch=data.steps_per_epoch,
            first_epoch=first_epoch,
            epochs=epochs,
        ),
        epochs=epochs,
        steps_per_epoch=data.steps_per_epoch,
        initial_epoch=first_epoch,
        callbacks=[
            # Raises before any epoch-end callback can save broken
            # weights.
            callbacks.StopOnNonFiniteLoss(output.checkpoints),
            *([model.fine_tuner] if model.fine_tuner else []),
            # Before the rest, so that they log its val metrics.
            callbacks.RetrievalValidation(data.val, output.checkpoints),
            callbacks.EpochHistory(output.history),
            backup,
            keras.callbacks.TensorBoard(output.logs),
        ],
        verbose=callbacks.progress_verbosity(),
    )


def in_float32(model, vocabulary, loss, batch_size, strategy):
    """The same model built in float32, for `finish` to load the best
    checkpoint into: mixed precision is how a run trains, and its test
    metrics and export are float32, the figures `evaluate` and a server
    give on any machine. (With cached features, the hubness banks are the
    float32 heads' embeddings of the features the run trained on.)"""
    with precision.policy("float32"), strategy.scope():
        encoder = build_model(vocabulary, loss, global_batch_size=batch_size)
        trained = (
            encoder
            if model.trained is model.encoder
            else head_model(encoder, loss, batch_size)
        )
    return Models(encoder, trained, model.fine_tuner, model.feature_dir)


def finish(
    model,
    run,
    dataset,
    data_dir,
    export,
    projector_images,
    correction,
    data,
    started,
):
    """Test metrics, export and projector of the best checkpoint.

    `data.train` is what `model.trained` trained on (cached features for
    heads): the hubness correction's banks are their embeddings.
    """
    encoder, trained = model.encoder, model.trained
    legacy_weights.load(
        trained,
        run.best_weights,
        "best checkpoint",
        "It was damaged after training.",
    )
    test_examples = data.test
    if correction is not None:
        correction.fit(trained, data.train)
        correction.save(run.hubness_banks)
    scored = test_examples
    if trained is not encoder:  # heads on cached features
        scored = features.cached_examples(
            encoder, test_examples, "test", model.feature_dir
        )
    scoring = time.time()
    metrics = embedding.evaluate_model(trained, scored, correction=correction)
    scoring = time.time() - scoring
    io_utils.write_json_atomic(run.metrics, metrics)
    write_operative_config(run)
    if export:
        version = saved_model.export_towers(
            encoder, run.export, correction=correction
        )
        print(f"Exported both towers to {run.export} (version {version}).")
    if projector_images:
        projector.write_projector(
            encoder, test_examples, run.projector, projector_images
        )
    title = (
        f"\nTest metrics of the best checkpoint ({dataset}; scored in "
        f"{scoring:.1f} s, the whole run took "
        f"{time.time() - started:.0f} s)"
    )
    if correction is not None:
        print(
            evaluation.format_table(
                metrics["cosine"], title=title + ", cosine:"
            )
        )
        title = (
            f"With the hubness correction (k = {correction.neighbours}"
            f", weight {correction.weight:g})"
        )
    print(evaluation.format_table(metrics, title=title + ":"))
    print(what_next(run, dataset, data_dir, export, projector_images))
    return metrics


def what_next(run, dataset, data_dir, export, projector_images):
    """Where the run's results are, and the commands that use them."""
    data = f" --data_dir={data_dir}" if data_dir else ""
    lines = [
        f"\nMetrics: {run.metrics}",
        "Next:",
        f"  python -m vse_tf.evaluate --model_dir={run.path}"
        "   # again, or --split / --protocol",
        f"  tensorboard --logdir {run.logs}   # loss and R@K by epoch",
    ]
    if export:
        lines.append(
            f"  python -m vse_tf.search --export_dir={run.export} "
            f"--images={dataset}:test{data} --query 'a caption'"
        )
    if projector_images:
        lines.append(
            f"  tensorboard --logdir {run.projector}   # the "
            "joint space, Projector tab"
        )
    return "\n".join(lines)


def head_model(model, loss, global_batch_size, total_steps=None):
    """The model's heads, compiled to train on cached backbone features."""
    return _built_and_compiled(
        model.head_model(), loss, global_batch_size, total_steps
    )


def _log_caption_lengths(train_captions, model):
    if model.tokenizer is None:
        return  # a pretrained tokenizer: its own length rules
    max_length = model.tokenizer.output_shape[-1]
    cut, empty, total = text_towers.count_long_captions(
        train_captions, max_length
    )
    if cut or empty:
        print(
            f"Train captions: {cut} of {total} ({100 * cut / total:.1f}%) "
            f"are longer than {max_length - 1} words and are cut there "
            f"(build_text_tower.max_length = {max_length}); {empty} are "
            "empty and embed as the start token alone."
        )
