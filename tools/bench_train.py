"""Training-step and input-pipeline throughput.

    python -m tools.bench_train                  # every row, a table
    python -m tools.bench_train --configs=precomp --precisions=float32 \\
        --json=t.json

Rows, each timed after warm-up on one batch held in memory (so the step alone
is measured), with XLA off and on, in float32 and mixed bfloat16:

  demo     gin/demo.gin's towers: a small CNN on 64x64 pixels and a GRU of
           128 over 64-d words, D = 256, batch 128, learned temperature.
  precomp  the VSE++ precomputed-feature step: 2048-d global image features
           through a linear projection, 300-d word embeddings over a
           10,000-word vocabulary into a one-layer GRU of 1024, D = 1024,
           batch 128, Adam, gradient clipping 2.0, captions of 8 to 20
           tokens, VSE++'s max-of-hinges loss (margin 0.2).
  f8k_heads  gin/flickr8k.gin's step on cached features: three heads a
           tower (2048 hidden, linear shortcut, dropout 0.5) over the
           5,768-d image features (two views) and the 1,152-d caption
           features, D = 512, batch 256, learned temperature (needs the
           pretrained packages: the towers are built to take their heads).

Then the input pipeline alone: pairs per second that `pipeline.training_pairs`
delivers from the built-in `shapes` data (cached, shuffled, batched), the
demo's data path.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from tools import machine_info
from vse_tf import io_utils
from vse_tf import losses
from vse_tf.data import pipeline
from vse_tf.data import shapes  # noqa: F401  (registers the builder)
from vse_tf.models import dual_encoder
from vse_tf.models import image_towers
from vse_tf.models import text_towers

BATCH = 128
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCABULARY = [f"w{i}" for i in range(10_000)]


def random_captions(rng, count, low=8, high=20):
    lengths = rng.integers(low, high + 1, size=count)
    return np.array([" ".join(rng.choice(VOCABULARY, size=n)) for n in lengths])


def demo_model(vocabulary=VOCABULARY):
    return (
        dual_encoder.DualEncoder(
            image_towers.build_image_tower(
                image_size=64,
                conv_layers=((32, 4, 4), (64, 3, 2)),
                hidden_units=512,
                embedding_dim=256,
            ),
            text_towers.build_text_tower(
                vocabulary,
                max_length=21,
                word_dim=64,
                units=128,
                embedding_dim=256,
            ),
            learnable_temperature=0.1,
        ),
        keras.optimizers.Adam(2e-3),
        (losses.AllNegativesLoss()),
    )


def precomp_model():
    return (
        dual_encoder.DualEncoder(
            image_towers.build_precomputed_tower(
                feature_dim=2048, embedding_dim=1024
            ),
            # 20 words + the start token; VSE++ adds <start> and <end>.
            text_towers.build_text_tower(
                VOCABULARY,
                max_length=21,
                word_dim=300,
                units=1024,
                embedding_dim=1024,
            ),
        ),
        keras.optimizers.Adam(2e-4, global_clipnorm=2.0),
        losses.HingeLoss(margin=0.2, max_violation=True),
    )


def f8k_heads_model():
    import gin

    from vse_tf import gin_config
    from vse_tf.modeling import building
    from vse_tf.modeling import optimizers

    gin_config.load_gin([os.path.join(REPO, "gin", "flickr8k.gin")], [])
    try:
        heads = building.build_model(["a"]).head_model()
        # Both gin-configurable: the gin file's settings (3 heads, t, clip).
        return heads, optimizers.make_optimizer(), losses.AllNegativesLoss()
    finally:
        # The configs after this one build without the gin file's bindings
        # (its AllNegativesLoss.projection_heads = 3 would reach the demo).
        gin.clear_config()


CONFIGS = {
    "demo": demo_model,
    "precomp": precomp_model,
    "f8k_heads": f8k_heads_model,
}
BATCHES = {"f8k_heads": 256}  # the rest: BATCH


def batch_size(config):
    return BATCHES.get(config, BATCH)


def one_batch(config, rng, size=None):
    size = size or batch_size(config)
    if config == "f8k_heads":
        return (
            {
                "image": rng.standard_normal((size, 2, 5768)).astype(
                    np.float32
                ),
                "caption": rng.standard_normal((size, 1152)).astype(np.float32),
            },
            np.arange(size, dtype=np.int64),
        )
    if config == "demo":
        images = rng.uniform(0, 255, (size, 64, 64, 3)).astype(np.float32)
    else:
        images = rng.standard_normal((size, 2048)).astype(np.float32)
    return (
        {"image": images, "caption": random_captions(rng, size)},
        np.arange(size, dtype=np.int64),
    )


class StepClock(keras.callbacks.Callback):
    """The time between the first and the last step's end, a step: what
    `fit` spends before and after its steps (its iterator, its callbacks;
    a second or so a call) stays out of the figure."""

    def on_train_begin(self, logs=None):
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())

    def seconds_per_step(self):
        return (self.ends[-1] - self.ends[0]) / (len(self.ends) - 1)


def median_step_seconds(model, data, steps):
    """Seconds per training step, the median of three fits of `steps`
    timed steps (`StepClock`)."""
    runs = []
    for _ in range(3):
        clock = StepClock()
        model.fit(
            data,
            steps_per_epoch=steps + 1,
            epochs=1,
            verbose=0,
            callbacks=[clock],
        )
        runs.append(clock.seconds_per_step())
    return statistics.median(runs)


def time_steps(
    config, precision, xla, steps, warmup, size=None, with_model=None
):
    """Seconds per training step, the median of three runs of `steps`
    timed steps (`StepClock`); then
    `with_model(model, loss, batch)` if given, under the same policy."""
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(precision)
    try:
        model, optimizer, loss = CONFIGS[config]()
        batch = one_batch(config, np.random.default_rng(0), size)
        model(batch[0])
        model.compile(optimizer=optimizer, loss=loss)
        model.compile_step(xla)
        data = tf.data.Dataset.from_tensors(batch).repeat()
        model.fit(data, steps_per_epoch=warmup, epochs=1, verbose=0)
        seconds = median_step_seconds(model, data, steps)
        if with_model:
            with_model(model, loss, batch)
        return seconds
    finally:
        keras.mixed_precision.set_global_policy("float32")


def pipeline_pairs_per_second(data_dir, batches):
    examples = pipeline.load_examples("shapes", "train", data_dir)
    iterator = iter(pipeline.training_pairs(examples, BATCH, seed=0))
    # The first pass fills the cache of decoded images; time the steady state.
    for _ in range(50_000 // BATCH + 10):
        next(iterator)
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * BATCH / (time.perf_counter() - started)


def machine():
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return machine_info.describe() + (f", GPUs {gpus}" if gpus else ", no GPU")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="demo,precomp")
    parser.add_argument("--precisions", default="float32,mixed_bfloat16")
    parser.add_argument("--xla", default="off,on")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--pipeline_batches",
        type=int,
        default=400,
        help="0 skips the input-pipeline row",
    )
    parser.add_argument(
        "--data_dir",
        default=None,
        help="TFDS dir for the shapes data of the pipeline "
        "row (generated there on first use)",
    )
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    rows = []
    print(
        f"{'config':10}{'precision':16}{'XLA':5}{'ms/step':>10}{'pairs/s':>10}"
    )
    for config in args.configs.split(","):
        for precision in args.precisions.split(","):
            for xla in args.xla.split(","):
                seconds = time_steps(
                    config, precision, xla == "on", args.steps, args.warmup
                )
                pairs = batch_size(config) / seconds
                rows.append(
                    {
                        "config": config,
                        "precision": precision,
                        "xla": xla == "on",
                        "ms_per_step": 1e3 * seconds,
                        "batch": batch_size(config),
                        "pairs_per_s": pairs,
                    }
                )
                print(
                    f"{config:10}{precision:16}{xla:5}{1e3 * seconds:10.1f}"
                    f"{pairs:10.0f}",
                    flush=True,
                )
    figures = {
        "batch": BATCH,
        "steps": rows,
        "machine": machine(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    if args.pipeline_batches:
        rate = pipeline_pairs_per_second(args.data_dir, args.pipeline_batches)
        figures["pipeline_pairs_per_s"] = rate
        print(f"{'input pipeline (shapes, cached)':31}{'':10}{rate:10.0f}")
        demo = [r["pairs_per_s"] for r in rows if r["config"] == "demo"]
        if demo:
            print(f"pipeline / fastest demo step: {rate / max(demo):.1f}x")
    print(
        f"{figures['machine']}; TensorFlow {tf.__version__}, Keras "
        f"{keras.__version__}"
    )
    if args.json:
        io_utils.write_json_atomic(args.json, figures)


if __name__ == "__main__":
    main()
