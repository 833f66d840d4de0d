"""Text towers: raw caption strings in, an L2-normalized embedding out.

Tokenization happens inside the graph (`TextVectorization` over a fixed
vocabulary), so a tower exported as a SavedModel takes raw strings.
"""

import os

import gin
import keras
import tensorflow as tf

from vse_tf import errors
from vse_tf import io_utils
from vse_tf.models import packed_gru
from vse_tf.models import pooling
from vse_tf.models import towers

STANDARDIZE = "lower_and_strip_punctuation"
# Starts every caption, as VSE++'s <start>: an empty caption still has one
# token, so its embedding is a learned unit vector rather than zeros.
START = "startofcaption"
# The two halves of a text tower: strings -> token ids (string ops, run on
# the host) and token ids -> embedding (numeric, can be XLA-compiled).
TOKENIZER = "tokenizer"
ENCODER = "text_encoder"


@keras.saving.register_keras_serializable(package="vse_tf")
class PrependWord(keras.layers.Layer):
    """Puts `word` in front of every string of a batch."""

    def __init__(self, word=START, **kwargs):
        super().__init__(**kwargs)
        self.word = word

    def call(self, text):
        return tf.strings.join([self.word + " ", text])

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "word": self.word}


@gin.configurable
def build_text_tower(
    vocabulary,
    max_length=32,
    word_dim=300,
    units=1024,
    bidirectional=False,
    embedding_dim=256,
    word_vectors=None,
    head_units=None,
    name="text_tower",
):
    """Word embedding, a one-layer GRU, a projection.

    Args:
      vocabulary: list of words (without the padding and OOV tokens).
      max_length: captions are cut to this many tokens, the start token
        included.
      word_dim: size of the word embeddings.
      units: GRU units.
      bidirectional: False is VSE++'s GRU (last state); True is
        VSE-infinity's BiGRU, whose two final states are averaged.
      embedding_dim: size of the joint space.
      word_vectors: None learns the word embeddings from scratch;
        "glove-6b-50d" starts them from GloVe (word_dim must be 50).
      head_units: None, or the hidden width of the paper's head after the
        projection (see `pooling.convse_head`).
    """
    factory = "build_text_tower"
    errors.check_number(
        f"{factory}.max_length", max_length, minimum=1, integer=True
    )
    for parameter, value in (
        ("word_dim", word_dim),
        ("units", units),
        ("embedding_dim", embedding_dim),
    ):
        errors.check_number(
            f"{factory}.{parameter}", value, minimum=1, integer=True
        )
    errors.check_number(
        f"{factory}.head_units", head_units, minimum=1, integer=True, none=True
    )
    vocabulary = [START] + [w for w in vocabulary if w != START]
    text = keras.Input((), dtype="string", name="text")
    tokenizer = _tokenizer(vocabulary, max_length)

    tokens = keras.Input((max_length,), dtype="int64", name="tokens")
    matrix = _word_vectors(vocabulary, word_vectors, word_dim)
    embedding_layer = keras.layers.Embedding(
        len(vocabulary) + 2, word_dim, mask_zero=True, name="word_embedding"
    )
    words = embedding_layer(tokens)
    gru = packed_gru.PackedGRU(units, name="gru")
    if bidirectional:
        gru = keras.layers.Bidirectional(gru, merge_mode="ave", name="bigru")
    x = gru(words)
    x = keras.layers.Dense(embedding_dim, name="projection")(x)
    x = pooling.convse_head(x, head_units, embedding_dim)
    # float32 under a mixed-precision policy too: the losses and the
    # exported signatures see float32 unit vectors.
    embedding = keras.layers.UnitNormalization(
        name="l2_normalize", dtype="float32"
    )(x)
    encoder = keras.Model(tokens, embedding, name=ENCODER)
    if matrix is not None:
        embedding_layer.set_weights([matrix])
    return towers.Tower(
        text,
        encoder(tokenizer(text)),
        name=name,
        tokenizer=tokenizer,
        head=encoder,
    )


def _tokenizer(vocabulary, max_length):
    """Captions to `max_length` token ids, the start word first."""
    return keras.Sequential(
        [
            keras.Input((), dtype="string"),
            PrependWord(START, name="start"),
            keras.layers.TextVectorization(
                standardize=STANDARDIZE,
                output_sequence_length=max_length,
                vocabulary=vocabulary,
                name="tokenize",
            ),
        ],
        name=TOKENIZER,
    )


def _word_vectors(vocabulary, word_vectors, word_dim):
    """The embedding matrix that starts the words from `word_vectors`
    (e.g. "glove-6b-50d"); None for none."""
    if not word_vectors:
        return None
    from vse_tf.pretrained import glove

    # Index 0 is padding and 1 the out-of-vocabulary token.
    matrix, found = glove.embedding_matrix(
        ["", "[UNK]", *vocabulary], word_vectors
    )
    if matrix.shape[1] != word_dim:
        raise errors.UserError(
            f"{word_vectors} has {matrix.shape[1]}-d "
            f"vectors; set build_text_tower.word_dim = "
            f"{matrix.shape[1]}."
        )
    print(
        f"Word embeddings: {found} of {len(vocabulary)} words from "
        f"{word_vectors}."
    )
    return matrix


def count_long_captions(captions, max_length):
    """(captions cut by `max_length` tokens, empty captions, all captions).

    Args:
      captions: a tf.data.Dataset of strings.
      max_length: the tower's token budget, start token included.
    """
    words = keras.layers.TextVectorization(
        standardize=STANDARDIZE,
        output_mode="int",
        ragged=True,
        vocabulary=["x"],
    )  # lengths need no real vocabulary

    def count(batch):
        lengths = words(batch).row_lengths() + 1  # + the start token
        return (
            tf.reduce_sum(tf.cast(lengths > max_length, tf.int64)),
            tf.reduce_sum(tf.cast(lengths == 1, tf.int64)),
            tf.size(lengths, tf.int64),
        )

    totals = (
        captions.batch(4096)
        .map(count)
        .reduce(
            (tf.constant(0, tf.int64),) * 3,
            lambda total, batch: tuple(a + b for a, b in zip(total, batch)),
        )
    )
    return tuple(int(t) for t in totals)


def build_vocabulary(captions, max_tokens=10_000):
    """The most frequent words of `captions`, a tf.data.Dataset of strings."""
    vectorizer = keras.layers.TextVectorization(
        max_tokens=max_tokens + 2, standardize=STANDARDIZE
    )
    vectorizer.adapt(captions.batch(4096))
    # Index 0 is padding and 1 is the out-of-vocabulary token.
    return vectorizer.get_vocabulary()[2:]


def save_vocabulary(vocabulary, path):
    """One word a line, written atomically."""
    io_utils.write_text_atomic(path, "".join(f"{w}\n" for w in vocabulary))


def load_vocabulary(path):
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]
