"""The exact GELU under mixed bfloat16: computed in bfloat16 (erfc in
bfloat16) against float32 and rounded once (`pretrained_towers.exact_gelu`).

    python -m tools.bench_gelu --data_dir=../shared/data --split=val

First the activation alone on a [3584, 1536] bfloat16 tensor (a batch of
256 captions of 14 tokens at MiniLM's feed-forward width), the median of 30
calls each way. Then MiniLM's caption features: the text backbone of
gin/flickr8k.gin (all-MiniLM-L6-v2, needs the pretrained packages) embeds a
Flickr8k split's captions as a feature cache does (batches of 256,
shortest first), --repeats times each way, taking turns, after a warm-up;
it prints the median seconds of each way and the largest difference
between their features.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from tools import bench_matmul
from tools import machine_info
from vse_tf.data import pipeline
from vse_tf.models import pretrained_towers
from vse_tf.training import features


def bfloat16_gelu(x):
    """The exact GELU in the input's dtype (erfc in bfloat16)."""
    return keras.activations.gelu(x, approximate=False)


def activation_milliseconds(gelu, repeats=30):
    """The median time of `gelu` on a [3584, 1536] bfloat16 tensor."""
    x = tf.cast(tf.random.stateless_normal([3584, 1536], (0, 0)), "bfloat16")
    activation = tf.function(gelu)
    return 1e3 * bench_matmul.median_seconds(
        lambda: activation(x).numpy(), repeats
    )


def caption_seconds(encoder, gelu, captions):
    """(seconds, features) of one pass over `captions` with `gelu` in the
    encoder's feed-forward layers, after a warm-up."""
    for layer in encoder.backbone.transformer_layers:
        layer._feedforward_intermediate_dense.activation = gelu
    embed = tf.function(
        lambda texts: tf.cast(encoder(texts, training=False), tf.float32),
        reduce_retracing=True,
    )
    features._caption_features(embed, captions[:512], 256)  # traced
    started = time.perf_counter()
    embedded = features._caption_features(embed, captions, 256)
    return time.perf_counter() - started, embedded


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ways = {
        "bfloat16": bfloat16_gelu,
        "float32": pretrained_towers.exact_gelu,
    }
    for way, gelu in ways.items():
        print(
            f"GELU in {way} on [3584, 1536]: "
            f"{activation_milliseconds(gelu):.1f} ms (median of 30)"
        )
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    # gin/flickr8k.gin's: 48 tokens, layers 4 to 6 pooled.
    encoder = pretrained_towers.build_sentence_encoder(
        sequence_length=48, pooled_layers=(4, 5, 6)
    )
    captions = np.array(
        [
            text.numpy()
            for text in pipeline.load_captions(
                "flickr8k", args.split, args.data_dir
            )
        ],
        dtype=object,
    )
    seconds = {way: [] for way in ways}
    embedded = {}
    for _ in range(args.repeats):  # taking turns
        for way, gelu in ways.items():
            took, embedded[way] = caption_seconds(encoder, gelu, captions)
            seconds[way].append(took)
    for way in ways:
        print(
            f"GELU in {way}: {statistics.median(seconds[way]):.1f} s for "
            f"{len(captions)} captions (median of {args.repeats})"
        )
    difference = np.abs(embedded["bfloat16"] - embedded["float32"]).max()
    print(f"largest feature difference: {difference:.4f}")
    print(machine_info.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
