"""Embeds a split with a trained dual encoder and scores its retrieval."""

import weakref

import numpy as np
import tensorflow as tf

from vse_tf import evaluation
from vse_tf.data import pipeline

# One traced function per model, reused across epochs.
_EMBED_FNS = weakref.WeakKeyDictionary()


def _embed_fn(model):
    if model not in _EMBED_FNS:

        @tf.function(reduce_retracing=True)
        def embed(pixels, captions):
            return (
                model.image_tower(pixels, training=False),
                model.text_tower(captions, training=False),
            )

        _EMBED_FNS[model] = embed
    return _EMBED_FNS[model]


def embed_examples(model, examples, batch_size=250):
    """(image embeddings [N, D], caption embeddings [M, D], the captions of
    each image [N]): image i's captions follow image i - 1's."""
    embed = _embed_fn(model)
    images, texts, counts = [], [], []
    for pixels, captions in pipeline.evaluation_batches(examples, batch_size):
        if isinstance(captions, tf.RaggedTensor):
            counts.append(captions.row_lengths().numpy())
            captions = captions.flat_values
        else:
            counts.append(np.full(captions.shape[0], captions.shape[1]))
            captions = tf.reshape(captions, [-1, *captions.shape[2:]])
        image_embeddings, text_embeddings = embed(pixels, captions)
        images.append(image_embeddings.numpy())
        texts.append(text_embeddings.numpy())
    return (
        np.concatenate(images),
        np.concatenate(texts),
        np.concatenate(counts).astype(np.int64),
    )


def evaluate_model(model, examples, folds=1, batch_size=250, correction=None):
    """Retrieval metrics of the split; with a fitted
    `hubness.HubnessCorrection`, those of its corrected scores, and the
    plain cosine ones under "cosine"."""
    return evaluate_embeddings(
        embed_examples(model, examples, batch_size), folds, correction
    )


def evaluate_embeddings(embedded, folds=1, correction=None):
    """`evaluate_model`'s metrics of `embed_examples`'s (images, texts,
    captions per image)."""
    images, texts, captions_per_image = embedded
    metrics = evaluation.retrieval_metrics(
        images, texts, captions_per_image, folds=folds
    )
    if correction is None:
        return metrics
    return {
        **correction.metrics(images, texts, captions_per_image, folds),
        "cosine": metrics,
    }
