"""The keras-hub BERT text tower: from a WordPiece vocabulary (random
weights), from a keras-hub preset folder, and its errors."""

import keras_hub
import numpy as np
import pytest

from vse_tf.models import pretrained_towers
from vse_tf.pretrained.torch_weights import WeightsError

TOKENS = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "a",
    "dog",
    "runs",
    "on",
    "the",
    "grass",
    "cat",
    "sits",
    "##s",
]
CAPTIONS = np.array(["A dog runs on the grass", "the cats sit", ""])
SIZE = dict(
    num_layers=1,
    num_heads=2,
    hidden_dim=16,
    intermediate_dim=32,
    sequence_length=12,
    embedding_dim=8,
)


@pytest.fixture
def vocabulary_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(TOKENS) + "\n")
    return str(path)


def test_a_random_bert_from_a_vocabulary(vocabulary_file):
    tower = pretrained_towers.build_bert_tower(
        vocabulary_file=vocabulary_file, weights="random", **SIZE
    )
    embeddings = tower(CAPTIONS).numpy()
    assert embeddings.shape == (3, 8)
    np.testing.assert_allclose(
        np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5
    )
    encoder = tower.backbone
    # WordPiece over the file's tokens: "cats" is "cat" + "##s".
    ids = encoder.tokenizer(np.array(["the cats"])).to_list()[0]
    assert [TOKENS[i] for i in ids] == ["the", "cat", "##s"]
    # Fine-tuned by default: BERT's weights train with the head.
    assert len(tower.trainable_weights) > len(tower.head.trainable_weights)


def test_a_keras_hub_preset_folder_gives_the_same_bert(
    tmp_path, vocabulary_file
):
    tower = pretrained_towers.build_bert_tower(
        vocabulary_file=vocabulary_file, weights="random", **SIZE
    )
    encoder = tower.backbone
    folder = str(tmp_path / "bert")
    encoder.backbone.save_to_preset(folder)
    keras_hub.models.BertTokenizer(
        vocabulary=vocabulary_file, lowercase=True
    ).save_to_preset(folder)
    loaded = pretrained_towers.build_bert_tower(preset=folder, **SIZE)
    np.testing.assert_allclose(
        loaded.backbone(CAPTIONS), encoder(CAPTIONS), rtol=1e-5, atol=1e-6
    )
    fresh = pretrained_towers.build_bert_tower(
        preset=folder, weights="random", **SIZE
    )
    assert not np.allclose(
        fresh.backbone(CAPTIONS), encoder(CAPTIONS), atol=1e-3
    )


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({}, "needs a preset folder"),
        (
            {"vocabulary_file": "VOCAB"},
            "set build_bert_tower.weights = 'random'",
        ),
        (
            {"vocabulary_file": "/nowhere/vocab.txt", "weights": "random"},
            "No WordPiece vocabulary at '/nowhere/vocab.txt'",
        ),
        ({"preset": "/nowhere"}, "is not a BERT folder"),
    ],
)
def test_what_is_missing_is_named(kwargs, message, vocabulary_file):
    kwargs = {
        k: vocabulary_file if v == "VOCAB" else v for k, v in kwargs.items()
    }
    with pytest.raises(WeightsError, match=message):
        pretrained_towers.build_bert_tower(**kwargs)


def test_pooled_layers_join_each_layers_normalized_mean(vocabulary_file):
    size = {**SIZE, "num_layers": 3}
    tower = pretrained_towers.build_bert_tower(
        vocabulary_file=vocabulary_file,
        weights="random",
        pooled_layers=(1, 3),
        **size,
    )
    encoder = tower.backbone
    assert encoder.output_dim == 32
    joined = encoder(CAPTIONS).numpy()
    assert joined.shape == (3, 32)

    # The reference runs BERT's layers one by one, by hand.
    backbone = encoder.backbone
    token_ids, mask = (
        np.asarray(t) for t in encoder.packer(encoder.tokenizer(CAPTIONS))
    )
    tokens = backbone.token_embedding(token_ids)
    x = backbone.embeddings_layer_norm(
        tokens
        + backbone.position_embedding(tokens)
        + backbone.segment_embedding(np.zeros_like(token_ids))
    )
    expected = []
    for layer in backbone.transformer_layers:
        x = layer(x, padding_mask=mask)
        real = mask[..., None].astype(np.float32)
        mean = (np.asarray(x) * real).sum(1) / real.sum(1)
        expected.append(mean / np.linalg.norm(mean, axis=1, keepdims=True))
    np.testing.assert_allclose(
        joined, np.concatenate([expected[0], expected[2]], axis=1), atol=1e-5
    )
    # The last layer alone is the default sentence embedding.
    np.testing.assert_allclose(
        joined[:, 16:],
        encoder.__class__(encoder.tokenizer, backbone, encoder.sequence_length)(
            CAPTIONS
        ).numpy(),
        atol=1e-6,
    )
    assert tower(CAPTIONS).shape == (3, 8)


def test_pooled_layers_outside_the_model_are_refused(vocabulary_file):
    with pytest.raises(ValueError, match="between 1 and 1"):
        pretrained_towers.build_bert_tower(
            vocabulary_file=vocabulary_file,
            weights="random",
            pooled_layers=(2,),
            **SIZE,
        )


def test_projection_heads_join_unit_vectors(vocabulary_file):
    tower = pretrained_towers.build_bert_tower(
        vocabulary_file=vocabulary_file,
        weights="random",
        projection_heads=2,
        **SIZE,
    )
    embeddings = tower(CAPTIONS).numpy()
    assert embeddings.shape == (3, 16)
    # Two unit vectors scaled by 1/sqrt(2): each half has norm 1/sqrt(2).
    for half in (embeddings[:, :8], embeddings[:, 8:]):
        np.testing.assert_allclose(
            np.linalg.norm(half, axis=1), np.sqrt(0.5), rtol=1e-5
        )
    assert tower.projection_heads == 2


def test_exact_gelu_under_bfloat16_is_the_true_gelu_rounded_once():
    # Computed in float32 and rounded to bfloat16 at the end, every value
    # is the float64 GELU of the bfloat16 input rounded to bfloat16; erfc
    # taken in bfloat16 misses that for about 4 values in 10.
    import math

    import keras

    inputs = keras.ops.cast(np.linspace(-6, 6, 4001), "bfloat16")
    outputs = pretrained_towers.exact_gelu(inputs)
    assert outputs.dtype == "bfloat16"
    x = keras.ops.convert_to_numpy(keras.ops.cast(inputs, "float64"))
    truth = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x]
    rounded = keras.ops.cast(np.array(truth, np.float32), "bfloat16")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(keras.ops.cast(outputs, "float32")),
        keras.ops.convert_to_numpy(keras.ops.cast(rounded, "float32")),
    )
