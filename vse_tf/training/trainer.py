"""Training a dual encoder, the library behind `python -m vse_tf.train`.

`train(model_dir)` packs gin's `train.<keyword>` bindings into one
`settings.RunSettings`, then runs four named steps, each a function of its
own that takes those settings:

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

from vse_tf import errors
from vse_tf import evaluation
from vse_tf import io_utils
from vse_tf.data import pipeline
from vse_tf.evaluation import embedding
from vse_tf.modeling import building
from vse_tf.modeling import optimizers
from vse_tf.models import dual_encoder
from vse_tf.models import gradient_cache
from vse_tf.models import text_towers
from vse_tf.serving import projector
from vse_tf.serving import saved_model
from vse_tf.training import callbacks
from vse_tf.training import distribute
from vse_tf.training import features
from vse_tf.training import fine_tuning
from vse_tf.training import legacy_weights
from vse_tf.training import precision
from vse_tf.training import resume
from vse_tf.training import run_dir
from vse_tf.training import settings as run_settings
from vse_tf.training import warm_start


def train(model_dir, data_dir=None):
    """Trains, validates each epoch, and scores the best checkpoint on test,
    with the settings gin binds to `train` (`settings.run_settings`).

    Returns:
      The test metrics, as in metrics.json (None on a non-chief worker).
    """
    return run_training(run_settings.run_settings(model_dir, data_dir))


def run_training(settings):
    """`train` with its `settings.RunSettings` made."""
    started = time.time()
    # First: a multi-worker strategy must set up collectives before
    # TensorFlow runs anything.
    strategy = distribute.get_strategy()
    distribute.check_batch_size(
        settings.batch_size, strategy, settings.microbatch_size
    )
    arithmetic = precision.choose(settings.mixed_precision)
    with (
        distribute.WorkerDir(settings.model_dir, strategy) as worker,
        precision.policy(arithmetic.policy),
    ):
        run = run_dir.RunDir(settings.model_dir)
        worker_dir = run_dir.RunDir(worker.path)
        # Until training starts, a user error leaves no new folder behind.
        with io_utils.removed_on_user_error(settings.model_dir):
            splits, vocabulary, models = _set_up(
                settings, strategy, run, worker_dir, arithmetic.policy
            )
        print(
            f"Training on {settings.dataset_name} with "
            f"{type(settings.loss).__name__}: "
            f"{_count(settings.epochs, 'epoch')} x "
            f"{_count(splits.steps_per_epoch, 'step')} of "
            f"{settings.batch_size} pairs, "
            f"{_count(strategy.num_replicas_in_sync, 'replica')}, "
            f"{_slices(settings, models.trained)}in "
            f"{arithmetic.policy} ({arithmetic.reason})"
        )
        fit(settings, models, splits, run, worker_dir)
        if arithmetic.policy != "float32":
            # Every worker: variables made under a multi-worker strategy
            # are broadcast from the chief.
            models = in_float32(settings, models, vocabulary, strategy)
        if not worker.is_chief:
            return None
        return finish(settings, models, splits, run, started)


def _set_up(settings, strategy, run, worker_dir, policy):
    """The splits, the vocabulary and the compiled models of the run, and
    its configuration and run.json written: everything before `fit`."""
    io_utils.ensure_writable_dir(settings.model_dir)
    # The optimizer's settings, checked before any data is read.
    optimizers.make_optimizer(global_batch_size=settings.batch_size)
    splits = prepare_data(settings)
    rerun = run.is_run()
    vocabulary = load_or_build_vocabulary(
        run, worker_dir, splits.train_captions, settings.max_vocabulary
    )
    # Seeded here, after the data is ready: generating a dataset on first
    # use draws from the global random state, and would give the first run
    # on a new data dir other initial weights than the rest.
    keras.utils.set_random_seed(settings.seed)
    if settings.deterministic:
        tf.config.experimental.enable_op_determinism()
    models = build(settings, vocabulary, splits, strategy, worker_dir)
    # Resumable only with the model and data the backup holds.
    resume.check_backup(
        run, models.trained, settings.dataset_name, settings.cache_features
    )
    if rerun and not run.has_backup():
        print(
            f"{settings.model_dir} holds no backup yet (the first is "
            "written when an epoch ends): training starts from epoch 1."
        )
    warm = (
        None
        if settings.init_from is None
        else _warm_start(models.trained, settings.init_from, run)
    )
    write_operative_config(worker_dir)
    worker_dir.write_run_info(
        settings.run_info(
            splits.steps_per_epoch, policy, warm, splits.description
        )
    )
    return splits, vocabulary, models


def _slices(settings, model):
    """How a replica computes its share of the batch, for the log."""
    if settings.microbatch_size is None:
        return ""
    said = f"in slices of {settings.microbatch_size} (gradient caching), "
    norms = gradient_cache.batch_norm_layers(model)
    if norms:
        said += (
            f"batch norm by each slice's statistics ({len(norms)} layers, "
            f"e.g. {norms[0]}), "
        )
    return said


def _count(number, noun):
    return f"{number} {noun}{'' if number == 1 else 's'}"


def load_or_build_vocabulary(run, worker_dir, train_captions, max_tokens):
    """The run's vocabulary: read back on resume, else adapted and saved.

    Every worker of a multi-worker run adapts the same vocabulary from the
    same data; only the chief's `worker_dir` is the run's folder.
    """
    if os.path.exists(run.vocabulary):
        return text_towers.load_vocabulary(run.vocabulary)
    vocabulary = text_towers.build_vocabulary(train_captions, max_tokens)
    text_towers.save_vocabulary(vocabulary, worker_dir.vocabulary)
    return vocabulary


def write_operative_config(run):
    io_utils.write_text_atomic(run.operative_config, gin.operative_config_str())


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


@dataclasses.dataclass
class Splits:
    """What `prepare_data` gives the other steps. `train` and `val` are
    examples, replaced by cached features when heads train alone; `test`
    stays examples."""

    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset
    train_captions: tf.data.Dataset
    steps_per_epoch: int
    description: dict = None  # a source's own facts for run.json


def prepare_data(settings):
    """The three splits, and the steps of an epoch; a UserError for data
    that is missing or broken (the test split's too, checked before any
    training), or a batch or correction the data cannot fill."""
    name, data_dir = settings.dataset_name, settings.data_dir
    train_examples, val_examples, test_examples = (
        pipeline.load_examples(name, split, data_dir)
        for split in ("train", "val", "test")
    )
    train_captions = pipeline.load_captions(name, "train", data_dir)
    pairs = int(train_captions.cardinality())
    if pairs < 0:  # a count the source does not know: at least C a photo
        pairs = int(train_examples.cardinality()) * (
            train_examples.element_spec["captions"].shape[0] or 5
        )
    if settings.batch_size > pairs:
        raise errors.UserError(
            f"train.batch_size = {settings.batch_size} is larger than the "
            f"train split of {name!r}, which has {pairs} image-caption "
            "pairs; one batch would repeat pairs. Use a batch of at most "
            "that size."
        )
    if settings.hubness_correction is not None:
        # Before training, not after it.
        settings.hubness_correction.check_bank_size(
            int(train_examples.cardinality())
        )
    return Splits(
        train_examples,
        val_examples,
        test_examples,
        train_captions,
        settings.steps_per_epoch or max(pairs // settings.batch_size, 1),
        pipeline.describe(name, data_dir),
    )


@dataclasses.dataclass
class Models:
    """What `build` gives: the dual encoder, and what `fit` trains (the
    encoder itself, or its heads on cached features)."""

    encoder: dual_encoder.DualEncoder
    trained: dual_encoder.DualEncoder
    fine_tuner: keras.callbacks.Callback = None
    feature_dir: str = None


def build(settings, vocabulary, splits, strategy, worker_dir):
    """The compiled models; with `cache_features`, also the heads, and
    `splits` then holds the backbones' features in place of train and
    val."""
    total_steps = settings.epochs * splits.steps_per_epoch
    with strategy.scope():
        encoder = building.build_model(
            vocabulary, settings.loss, settings.batch_size, total_steps
        )
    try:
        # Checked here, before any feature extraction.
        encoder.compile_step(settings.jit_compile, settings.microbatch_size)
    except ValueError as error:
        raise errors.UserError(
            f"train.jit_compile = True: {error} Set it to False for this run."
        ) from error
    _log_caption_lengths(splits.train_captions, encoder)
    models = Models(
        encoder,
        encoder,
        fine_tuning.fine_tune_backbones(encoder, settings.cache_features),
    )
    if settings.cache_features:
        models.feature_dir = settings.feature_dir or worker_dir.features
        splits.train, splits.val = (
            features.cached_examples(
                encoder, examples, split, models.feature_dir
            )
            for split, examples in (
                ("train", splits.train),
                ("val", splits.val),
            )
        )
        with strategy.scope():
            models.trained = building.build_head_model(
                encoder, settings.loss, settings.batch_size, total_steps
            )
        models.trained.compile_step(
            settings.jit_compile, settings.microbatch_size
        )
    return models


def fit(settings, models, splits, run, worker_dir):
    """Keras's fit with the run's callbacks, from the epoch the backup
    holds (0 without one).

    Every worker reads the chief's backup (`run`) to resume, and writes
    its own checkpoints (`worker_dir`).
    """
    backup = callbacks.BackupAndRestore(
        run, splits.steps_per_epoch, worker_dir=worker_dir
    )
    # A resumed run starts the data at the epoch it resumes, in the
    # order a run never stopped would see it.
    first_epoch = backup.restore(models.trained)
    # Keras warns that fit's shuffle does not apply to a tf.data input;
    # the pipeline shuffles images and pairs itself.
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
    with callbacks.DeferSignals() as signals:
        models.trained.fit(
            pipeline.training_pairs(
                splits.train,
                settings.batch_size,
                seed=settings.seed,
                steps_per_epoch=splits.steps_per_epoch,
                epochs=range(first_epoch, settings.epochs),
            ),
            epochs=settings.epochs,
            steps_per_epoch=splits.steps_per_epoch,
            initial_epoch=first_epoch,
            callbacks=[
                # Raises before any epoch-end callback can save broken
                # weights.
                callbacks.StopOnNonFiniteLoss(worker_dir),
                *([models.fine_tuner] if models.fine_tuner else []),
                # Before the rest, so that they log its val metrics.
                callbacks.RetrievalValidation(splits.val, worker_dir),
                callbacks.EpochHistory(worker_dir.history),
                backup,
                keras.callbacks.TensorBoard(worker_dir.logs),
                signals,  # last: a stop keeps the epoch that just ended
            ],
            verbose=callbacks.progress_verbosity(),
        )


def in_float32(settings, models, vocabulary, strategy):
    """The same models built in float32, for `finish` to load the best
    checkpoint into: mixed precision is how a run trains, and its test
    metrics and export are float32, the figures `evaluate` and a server
    give on any machine. (With cached features, the hubness banks are the
    float32 heads' embeddings of the features the run trained on.)"""
    loss, batch_size = settings.loss, settings.batch_size
    with precision.policy("float32"), strategy.scope():
        encoder = building.build_model(vocabulary, loss, batch_size)
        trained = (
            encoder
            if models.trained is models.encoder
            else building.build_head_model(encoder, loss, batch_size)
        )
    return Models(encoder, trained, models.fine_tuner, models.feature_dir)


def finish(settings, models, splits, run, started):
    """Test metrics, export and projector of the best checkpoint.

    `splits.train` is what `models.trained` trained on (cached features for
    heads): the hubness correction's banks are their embeddings.
    """
    encoder, trained = models.encoder, models.trained
    correction = settings.hubness_correction
    legacy_weights.load(
        trained,
        run.best_weights,
        "best checkpoint",
        "It was damaged after training.",
    )
    if correction is not None:
        correction.fit(trained, splits.train)
        correction.save(run.hubness_banks)
    scored = splits.test
    if trained is not encoder:  # heads on cached features
        scored = features.cached_examples(
            encoder, splits.test, "test", models.feature_dir
        )
    scoring = time.time()
    embedded = embedding.embed_examples(trained, scored)
    metrics = embedding.evaluate_embeddings(embedded, correction=correction)
    scoring = time.time() - scoring
    io_utils.write_json_atomic(run.metrics, metrics)
    write_operative_config(run)
    if settings.export:
        version = saved_model.export_towers(
            encoder, run.export, correction=correction
        )
        print(f"Exported both towers to {run.export} (version {version}).")
    if settings.projector_images:
        projector.write_projector(
            encoder,
            splits.test,
            run.projector,
            settings.projector_images,
            embedded=embedded,
        )
    print_test_metrics(
        settings, metrics, scoring, whole_run=time.time() - started
    )
    print(what_next(settings, run))
    return metrics


def print_test_metrics(settings, metrics, scoring, whole_run):
    """The test table (with the hubness correction, its cosine table
    first), titled with how long scoring and the whole run took."""
    correction = settings.hubness_correction
    title = (
        f"\nTest metrics of the best checkpoint ({settings.dataset_name}; "
        f"scored in {scoring:.1f} s, the whole run took {whole_run:.0f} s)"
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


def what_next(settings, run):
    """Where the run's results are, and the commands that use them."""
    data_dir = settings.data_dir
    data = f" --data_dir={data_dir}" if data_dir else ""
    lines = [
        f"\nMetrics: {run.metrics}",
        "Next:",
        f"  python -m vse_tf.evaluate --model_dir={run.path}"
        "   # again, or --split / --protocol",
        f"  tensorboard --logdir {run.logs}   # loss and R@K by epoch",
    ]
    if settings.export:
        lines.append(
            f"  python -m vse_tf.search --export_dir={run.export} "
            f"--images={settings.dataset_name}:test{data} --query 'a caption'"
        )
    if settings.projector_images:
        lines.append(
            f"  tensorboard --logdir {run.projector}   # the "
            "joint space, Projector tab"
        )
    return "\n".join(lines)


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
