"""MiniLM's caption features under mixed bfloat16 with its exact GELU
computed in bfloat16 (Eigen's bfloat16 erfc) against float32 (what
`pretrained_towers.exact_gelu` does), taking turns.

    python -m tools.bench_gelu --data_dir=../shared/data --split=val

The text backbone of gin/flickr8k.gin (all-MiniLM-L6-v2, needs the
pretrained packages) embeds a Flickr8k split's captions as a feature cache
does (batches of 256, shortest first), --repeats times each way after a
warm-up; it prints the median seconds of each way and the largest
difference between their features.
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

from tools import machine_info
from vse_tf.data import pipeline
from vse_tf.models import pretrained_towers
from vse_tf.training import features


def bfloat16_gelu(x):
    """The exact GELU in the input's dtype (erfc in bfloat16)."""
    return keras.activations.gelu(x, approximate=False)


def caption_seconds(encoder, gelu, captions, repeats):
    """([seconds of each repeat], features) with `gelu` in the encoder's
    feed-forward layers."""
    for layer in encoder.backbone.transformer_layers:
        layer._feedforward_intermediate_dense.activation = gelu
    embed = tf.function(
        lambda texts: tf.cast(encoder(texts, training=False), tf.float32),
        reduce_retracing=True,
    )
    features._caption_features(embed, captions[:512], 256)  # traced
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        embedded = features._caption_features(embed, captions, 256)
        seconds.append(time.perf_counter() - started)
    return seconds, embedded


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
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
    ways = {
        "bfloat16": bfloat16_gelu,
        "float32": pretrained_towers.exact_gelu,
    }
    seconds = {way: [] for way in ways}
    embedded = {}
    for _ in range(args.repeats):  # taking turns
        for way, gelu in ways.items():
            times, embedded[way] = caption_seconds(encoder, gelu, captions, 1)
            seconds[way] += times
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
