"""Hubness correction: a candidate's score lowered by how close it sits to
the other modality's training embeddings.

In a joint space a few items ("hubs") lie near very many queries and are
retrieved for all of them. Cross-domain similarity local scaling (CSLS;
Conneau et al., 2018), with the neighbourhoods taken in a bank of training
embeddings (querybank normalisation; Bogolin et al., 2022), scores

    s(i, t) = cos(i, t) - h_i - h_t
    h_i = weight * mean of image i's k highest cosines to the caption bank
    h_t = weight * mean of caption t's k highest cosines to the image bank

For a fixed query its own h is a constant, so each direction ranks its
candidates by cosine minus their hubness, CSLS's rule, and one formula
serves both directions. The banks are train split embeddings (each image,
and the first caption of each), so nothing of the split scored is used.

Each exported tower carries the bank it needs and serves h beside the
embedding (see `vse_tf.serving.saved_model`). Scoring appends it to the
embeddings, [e, -h_i, 1] and [t, 1, -h_t], whose dot product is s(i, t), so
the exact rank counting of `vse_tf.evaluation` and search's one matrix
product are used unchanged.
"""

import gin
import numpy as np
import tensorflow as tf

from vse_tf import errors
from vse_tf import evaluation
from vse_tf import io_utils
from vse_tf.evaluation import embedding


@gin.configurable
class HubnessCorrection:
    """The correction's settings and, once `fit`, its two banks.

    Args:
      neighbours: k, the bank neighbours whose mean cosine is a hubness.
      weight: how much of it a score loses (CSLS: 1 for each side of
        2 * cos; gin/flickr8k.gin's 0.6 was picked on Flickr8k val).
    """

    def __init__(
        self, neighbours=30, weight=0.5, image_bank=None, text_bank=None
    ):
        errors.check_number(
            "HubnessCorrection.neighbours", neighbours, minimum=1, integer=True
        )
        errors.check_number(
            "HubnessCorrection.weight", weight, minimum=0, maximum=1
        )
        self.neighbours = int(neighbours)
        self.weight = float(weight)
        self.image_bank = image_bank
        self.text_bank = text_bank

    def fit(self, model, train_examples):
        """Banks from `model`'s embeddings of the train split: each image,
        and the first caption of each image."""
        images, texts, captions_per_image = embedding.embed_examples(
            model, train_examples
        )
        self.check_bank_size(len(images))
        self.image_bank = images
        first_captions = np.cumsum(captions_per_image) - captions_per_image
        self.text_bank = texts[first_captions]
        return self

    def check_bank_size(self, train_images):
        """A UserError unless banks of `train_images` rows have k rows."""
        if train_images < self.neighbours:
            raise errors.UserError(
                f"The train split has {train_images} images, fewer than the "
                f"hubness correction's {self.neighbours} neighbours; lower "
                "HubnessCorrection.neighbours (or set "
                "train.hubness_correction = None)."
            )

    def image_hubness(self, image_embeddings):
        """h_i [N] of image embeddings (against the caption bank)."""
        return self._hubness(image_embeddings, self.text_bank)

    def text_hubness(self, text_embeddings):
        """h_t [N] of caption embeddings (against the image bank)."""
        return self._hubness(text_embeddings, self.image_bank)

    def _hubness(self, embeddings, bank):
        # A chunk of rows at a time: a [chunk, bank] score matrix at most.
        chunks = [
            hubness(
                embeddings[start : start + 1024],
                bank,
                self.neighbours,
                self.weight,
            ).numpy()
            for start in range(0, len(embeddings), 1024)
        ]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)

    def metrics(
        self, image_embeddings, text_embeddings, captions_per_image=5, folds=1
    ):
        """`evaluation.retrieval_metrics` of the corrected scores."""
        return evaluation.retrieval_metrics(
            image_scoring(
                image_embeddings, self.image_hubness(image_embeddings)
            ),
            text_scoring(text_embeddings, self.text_hubness(text_embeddings)),
            captions_per_image,
            folds=folds,
        )

    def save(self, path):
        with io_utils.atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(
                    f,
                    neighbours=self.neighbours,
                    weight=self.weight,
                    image_bank=self.image_bank,
                    text_bank=self.text_bank,
                )

    @classmethod
    def load(cls, path):
        with np.load(path) as stored:
            return cls(
                int(stored["neighbours"]),
                float(stored["weight"]),
                stored["image_bank"],
                stored["text_bank"],
            )


def hubness(embeddings, bank, neighbours, weight):
    """weight * mean of each embedding's `neighbours` highest cosines to
    `bank` rows: [N, D], [M, D] -> [N] (TensorFlow, also inside a serving
    signature)."""
    scores = tf.matmul(
        tf.cast(embeddings, tf.float32),
        tf.cast(bank, tf.float32),
        transpose_b=True,
    )
    top = tf.math.top_k(scores, k=neighbours, sorted=False).values
    return weight * tf.reduce_mean(top, axis=1)


def image_scoring(image_embeddings, image_hubness):
    """[e, -h_i, 1]: its dot product with `text_scoring`'s [t, 1, -h_t] is
    e . t - h_i - h_t."""
    images = np.asarray(image_embeddings, np.float32)
    return np.concatenate(
        [
            images,
            -np.reshape(image_hubness, (-1, 1)),
            np.ones((len(images), 1), np.float32),
        ],
        axis=1,
    )


def text_scoring(text_embeddings, text_hubness):
    """[t, 1, -h_t] (see `image_scoring`)."""
    texts = np.asarray(text_embeddings, np.float32)
    return np.concatenate(
        [
            texts,
            np.ones((len(texts), 1), np.float32),
            -np.reshape(text_hubness, (-1, 1)),
        ],
        axis=1,
    )


def served_image_scoring(outputs):
    """A served image tower's outputs -> the vectors that scoring takes:
    [e, -h_i, 1] where it serves a hubness, e otherwise."""
    embeddings = outputs["embedding"].numpy()
    if "hubness" not in outputs:
        return embeddings
    return image_scoring(embeddings, outputs["hubness"].numpy())


def served_text_scoring(outputs):
    """A served text tower's outputs -> [t, 1, -h_t], or t (see
    `served_image_scoring`)."""
    embeddings = outputs["embedding"].numpy()
    if "hubness" not in outputs:
        return embeddings
    return text_scoring(embeddings, outputs["hubness"].numpy())
