"""A GPU check, ready the day a GPU is: correctness and speed in one run.

    python -m tools.gpu_check --out_dir=runs/gpu_check

With an NVIDIA GPU it runs at full size in a few minutes (8 at most on one
GPU); without one it runs the same code on the CPU at tiny sizes, which CI
does, so the script cannot rot. Writes gpu_check.json and gpu_check.md
(the table for BENCHMARKS.md) to --out_dir. The checks:

  devices     the GPUs TensorFlow sees, with their compute capability, and
              what train.mixed_precision = 'auto' picks on this machine
  replicas    MirroredStrategy on two logical devices carved from one GPU
              (two logical CPUs without one): a dual encoder's loss and
              gradients, its negatives gathered across the replicas, equal
              one device's on the global batch
  gru         Keras's GRU (cuDNN's kernel on a GPU) equals PackedGRU's
              packed loop on the same weights, padded captions included
  step        a training step of gin/coco.gin's towers: ResNet-152 at 224
              px (random weights, frozen) and VSE++'s GRU of 1024, batch
              128, with XLA, in float32 and bfloat16
  evaluation  Recall@K of 5K images x 25K captions (COCO 5K), and the bare
              matrix product beside it

A check that fails is reported, and the script exits 1.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

# Logical devices are fixed before TensorFlow first touches the hardware.
GPUS = tf.config.list_physical_devices("GPU")


def _gpu_memory_mb():
    try:
        out = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=memory.total",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return int(out.stdout.split()[0])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return 16_000


if GPUS:
    # Two halves of the first GPU, less room for the runtime.
    _half = int(_gpu_memory_mb() * 0.45)
    tf.config.set_logical_device_configuration(
        GPUS[0], [tf.config.LogicalDeviceConfiguration(memory_limit=_half)] * 2
    )
else:
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration()] * 2,
    )

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tools import machine_info  # noqa: E402
from tools.bench_train import VOCABULARY  # noqa: E402
from tools.bench_train import random_captions  # noqa: E402
from vse_tf import evaluation  # noqa: E402
from vse_tf import io_utils  # noqa: E402
from vse_tf import losses  # noqa: E402
from vse_tf.models import backbone_towers  # noqa: E402
from vse_tf.models import dual_encoder  # noqa: E402
from vse_tf.models import image_towers  # noqa: E402
from vse_tf.models import packed_gru  # noqa: E402
from vse_tf.models import text_towers  # noqa: E402
from vse_tf.training import precision  # noqa: E402

FULL = {
    "replica_batch": 64,
    "feature_dim": 2048,
    "gru_units": 1024,
    "gru_batch": 128,
    "backbone": "resnet152",
    "input_size": 256,
    "crop_size": 224,
    "word_dim": 300,
    "embedding_dim": 1024,
    "head_units": 2048,
    "step_batch": 128,
    "steps": 10,
    "eval_images": 5000,
}
TINY = {
    "replica_batch": 8,
    "feature_dim": 16,
    "gru_units": 16,
    "gru_batch": 8,
    "backbone": "resnet50",
    "input_size": 40,
    "crop_size": 32,
    "word_dim": 8,
    "embedding_dim": 16,
    "head_units": 32,
    "step_batch": 8,
    "steps": 2,
    "eval_images": 200,
}
TOLERANCE = 1e-4  # of the largest value: float32 sums in another order


def _relative_error(found, expected):
    found, expected = np.asarray(found), np.asarray(expected)
    return float(
        np.max(np.abs(found - expected)) / max(np.max(np.abs(expected)), 1e-30)
    )


def check_devices(sizes):
    gpus = precision.gpu_compute_capabilities()
    choice = precision.choose("auto")
    shown = [f"{name} ({'.'.join(map(str, cc))})" for name, cc in gpus]
    return {
        "ok": True,
        "gpus": shown,
        "auto_precision": choice.policy,
        "why": choice.reason,
        "detail": f"GPUs: {', '.join(shown) or 'none'}; 'auto' picks "
        f"{choice.policy}",
    }


def _small_encoder(sizes, seed):
    keras.utils.set_random_seed(seed)
    model = dual_encoder.DualEncoder(
        image_towers.build_precomputed_tower(
            feature_dim=sizes["feature_dim"],
            embedding_dim=sizes["embedding_dim"],
        ),
        text_towers.build_text_tower(
            VOCABULARY,
            max_length=21,
            word_dim=sizes["word_dim"],
            units=sizes["gru_units"],
            embedding_dim=sizes["embedding_dim"],
        ),
    )
    return model


def check_replicas(sizes):
    """Two replicas against one device: loss and every weight's gradient."""
    devices = [
        d.name for d in tf.config.list_logical_devices("GPU" if GPUS else "CPU")
    ][:2]
    rng = np.random.default_rng(0)
    batch = 2 * sizes["replica_batch"]
    inputs = {
        "image": rng.standard_normal((batch, sizes["feature_dim"])).astype(
            np.float32
        ),
        "caption": random_captions(rng, batch, low=3, high=19),
    }
    ids = np.arange(batch, dtype=np.float32)
    loss = losses.AllNegativesLoss(temperature=0.1)

    single = _small_encoder(sizes, seed=0)
    with tf.GradientTape() as tape:
        expected = loss(ids, single(inputs))
    expected_gradients = tape.gradient(expected, single.trainable_variables)

    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        mirrored = _small_encoder(sizes, seed=0)
    mirrored.set_weights(single.get_weights())

    def shard(array):
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(
                array[
                    ctx.replica_id_in_sync_group * sizes["replica_batch"] : (
                        ctx.replica_id_in_sync_group + 1
                    )
                    * sizes["replica_batch"]
                ]
            )
        )

    @tf.function
    def replica_step(image, caption, ids):
        with tf.GradientTape() as tape:
            value = loss(ids, mirrored({"image": image, "caption": caption}))
        gradients = tape.gradient(value, mirrored.trainable_variables)
        context = tf.distribute.get_replica_context()
        return value, context.all_reduce("sum", gradients)

    values, gradients = strategy.run(
        replica_step,
        args=(shard(inputs["image"]), shard(inputs["caption"]), shard(ids)),
    )
    # Keras scales each replica's loss by 1 / replicas: they add up.
    total = float(sum(strategy.experimental_local_results(values)))
    loss_error = abs(total - float(expected)) / abs(float(expected))
    # (The word embedding's gradients are IndexedSlices: made dense.)
    gradient_error = max(
        _relative_error(
            tf.convert_to_tensor(strategy.experimental_local_results(found)[0]),
            tf.convert_to_tensor(want),
        )
        for found, want in zip(gradients, expected_gradients)
    )
    return {
        "ok": loss_error < TOLERANCE and gradient_error < TOLERANCE,
        "devices": devices,
        "global_batch": batch,
        "loss_relative_error": loss_error,
        "gradient_relative_error": gradient_error,
        "detail": f"2 replicas vs 1 device, batch {batch}: loss "
        f"{loss_error:.1e}, gradients {gradient_error:.1e} "
        "(relative)",
    }


class _AlwaysPacked(packed_gru.PackedGRU):
    """PackedGRU's packed loop even where a GPU is visible."""

    def _packable(self, mask):
        return True


def check_gru(sizes):
    rng = np.random.default_rng(0)
    batch, steps, features = sizes["gru_batch"], 21, sizes["word_dim"]
    keras.utils.set_random_seed(0)
    reference = keras.layers.GRU(sizes["gru_units"])
    reference.build((None, steps, features))
    reference.cell.bias.assign(
        rng.normal(size=reference.cell.bias.shape).astype(np.float32)
    )
    packed = _AlwaysPacked(sizes["gru_units"])
    packed.build((None, steps, features))
    packed.set_weights(reference.get_weights())
    sequences = tf.constant(
        rng.normal(size=(batch, steps, features)), tf.float32
    )
    lengths = rng.integers(1, steps + 1, size=batch)
    mask = tf.constant(np.arange(steps)[None] < lengths[:, None])
    # Keras's GRU where the hardware puts it (cuDNN on a GPU).
    expected = reference(sequences, mask=mask)
    with tf.device("/CPU:0"):
        found = packed(sequences, mask=mask)
    error = _relative_error(found, expected)
    kernel = "cuDNN" if GPUS else "Keras's masked loop (CPU)"
    return {
        "ok": error < TOLERANCE,
        "relative_error": error,
        "kernel": kernel,
        "detail": f"{kernel} vs PackedGRU: {error:.1e} (relative)",
    }


def _coco_model(sizes):
    image = backbone_towers.build_backbone_tower(
        backbone=sizes["backbone"],
        weights="random",
        input_size=sizes["input_size"],
        crop_size=sizes["crop_size"],
        embedding_dim=sizes["embedding_dim"],
        head_units=sizes["head_units"],
    )
    text = text_towers.build_text_tower(
        VOCABULARY,
        max_length=48,
        word_dim=sizes["word_dim"],
        units=sizes["gru_units"],
        embedding_dim=sizes["embedding_dim"],
        head_units=sizes["head_units"],
    )
    return dual_encoder.DualEncoder(image, text)


def check_step(sizes):
    """Milliseconds a training step, median of three timed runs, with XLA,
    in each precision."""
    rng = np.random.default_rng(0)
    batch = sizes["step_batch"]
    data = tf.data.Dataset.from_tensors(
        (
            {
                "image": rng.uniform(
                    0, 255, (batch, sizes["input_size"], sizes["input_size"], 3)
                ).astype(np.float32),
                "caption": random_captions(rng, batch, low=3, high=19),
            },
            np.arange(batch, dtype=np.int64),
        )
    ).repeat()
    result = {"ok": True, "batch": batch, "backbone": sizes["backbone"]}
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
    for policy in ("float32", "mixed_bfloat16"):
        keras.mixed_precision.set_global_policy(policy)
        try:
            keras.utils.set_random_seed(0)
            model = _coco_model(sizes)
            model.compile(
                optimizer=keras.optimizers.Adam(2e-4, global_clipnorm=2.0),
                loss=losses.AllNegativesLoss(temperature=0.1),
            )
            model.compile_step(True)
            model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)
            timings = []
            for _ in range(3):
                started = time.perf_counter()
                history = model.fit(
                    data, steps_per_epoch=sizes["steps"], epochs=1, verbose=0
                )
                timings.append((time.perf_counter() - started) / sizes["steps"])
            finite = bool(np.isfinite(history.history["loss"][-1]))
            result[f"{policy}_ms"] = 1000 * statistics.median(timings)
            result["ok"] = result["ok"] and finite
        finally:
            keras.mixed_precision.set_global_policy("float32")
    result["bfloat16_speedup"] = (
        result["float32_ms"] / result["mixed_bfloat16_ms"]
    )
    result["detail"] = (
        f"{sizes['backbone']}, batch {batch}, XLA: float32 "
        f"{result['float32_ms']:.1f} ms, bfloat16 "
        f"{result['mixed_bfloat16_ms']:.1f} ms "
        f"({result['bfloat16_speedup']:.2f}x)"
    )
    return result


def check_evaluation(sizes):
    rng = np.random.default_rng(0)
    count, dim = sizes["eval_images"], sizes["embedding_dim"]
    images = rng.standard_normal((count, dim)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    texts = np.repeat(images, 5, axis=0) + rng.standard_normal(
        (5 * count, dim)
    ).astype(np.float32)
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    device = "/GPU:0" if GPUS else "/CPU:0"
    with tf.device(device):
        a, b = tf.constant(images), tf.constant(texts)
        tf.matmul(a, b, transpose_b=True).numpy()  # warm-up
        started = time.perf_counter()
        tf.matmul(a, b, transpose_b=True).numpy()
        matmul = time.perf_counter() - started
    started = time.perf_counter()
    metrics = evaluation.retrieval_metrics(images, texts, 5)
    seconds = time.perf_counter() - started
    return {
        "ok": bool(np.isfinite(metrics["rsum"])),
        "images": count,
        "captions": 5 * count,
        "seconds": seconds,
        "matmul_seconds": matmul,
        "matmul_device": device,
        "rsum": metrics["rsum"],
        "detail": f"{count:,} x {5 * count:,}: {seconds:.2f} s (matmul "
        f"on {device}: {matmul:.3f} s)",
    }


CHECKS = {
    "devices": check_devices,
    "replicas": check_replicas,
    "gru": check_gru,
    "step": check_step,
    "evaluation": check_evaluation,
}


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("--out_dir", default="runs/gpu_check")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="tiny sizes on a GPU too (the CPU's default)",
    )
    parser.add_argument(
        "--checks", nargs="+", default=list(CHECKS), choices=list(CHECKS)
    )
    args = parser.parse_args()
    sizes = TINY if args.tiny or not GPUS else FULL
    report = {
        "machine": machine_info.describe(),
        "tensorflow": tf.__version__,
        "sizes": "full" if sizes is FULL else "tiny",
        "checks": {},
    }
    started = time.time()
    for name in args.checks:
        print(f"{name} ...", flush=True)
        check_started = time.time()
        try:
            result = CHECKS[name](sizes)
        except Exception as error:  # reported, and the rest still run
            result = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        result["seconds_taken"] = time.time() - check_started
        report["checks"][name] = result
    report["seconds"] = time.time() - started
    lines = [
        f"{report['machine']}; TensorFlow {report['tensorflow']}; "
        f"{report['sizes']} sizes; {report['seconds']:.0f} s in all",
        "",
        "| check | result | detail |",
        "|---|---|---|",
    ]
    for name, result in report["checks"].items():
        detail = result.get("error") or result["detail"]
        lines.append(
            f"| {name} | {'pass' if result['ok'] else 'FAIL'} | {detail} |"
        )
    markdown = "\n".join(lines)
    print(markdown)
    os.makedirs(args.out_dir, exist_ok=True)
    io_utils.write_json_atomic(
        os.path.join(args.out_dir, "gpu_check.json"), report
    )
    io_utils.write_text_atomic(
        os.path.join(args.out_dir, "gpu_check.md"), markdown + "\n"
    )
    sys.exit(0 if all(r["ok"] for r in report["checks"].values()) else 1)


if __name__ == "__main__":
    main()
