"""The tower type: parts held as attributes, kept through a config round
trip, and found without a layer's name."""

import keras
import numpy as np

from vse_tf.models import image_towers
from vse_tf.models import pretrained_towers
from vse_tf.models import text_towers
from vse_tf.models import towers

CAPTIONS = np.array(["a red ball", "two blue boxes left of a cross"])


def _text_tower():
    return text_towers.build_text_tower(
        ["a", "red", "ball", "blue"],
        max_length=6,
        word_dim=4,
        units=4,
        embedding_dim=4,
    )


def _headed_tower(heads=2):
    # A backbone and projection heads, as the pretrained towers have.
    pixels = keras.Input((3,), name="pixels")
    backbone = keras.Model(
        pixels, keras.layers.Dense(5)(pixels), name="not_called_backbone"
    )
    head = pretrained_towers.projection_head(5, 6, 4, projection_heads=heads)
    return towers.Tower(
        pixels,
        head(backbone(pixels)),
        name="image_tower",
        backbone=backbone,
        head=head,
        projection_heads=heads,
    )


def test_parts_are_attributes_whatever_their_names():
    tower = _headed_tower()
    assert tower.backbone.name == "not_called_backbone"
    assert tower.head.name == "head" and tower.tokenizer is None
    assert tower.projection_heads == 2
    assert tower.encoder() is tower
    text = _text_tower()
    assert text.backbone is None and text.tokenizer is not None
    # From token ids: the text tower without its tokenizer.
    tokens = text.tokenizer(CAPTIONS)
    np.testing.assert_allclose(
        text.encoder()(tokens), text(CAPTIONS), atol=1e-6
    )
    assert image_towers.build_image_tower(image_size=8).head is None


def test_config_round_trip_keeps_the_parts_and_the_function():
    tower = _headed_tower(heads=3)
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    clone = towers.Tower.from_config(tower.get_config())
    clone.set_weights(tower.get_weights())
    np.testing.assert_allclose(clone(x), tower(x), atol=1e-6)
    assert clone.projection_heads == 3
    assert clone.backbone.name == "not_called_backbone"
    assert clone.head in clone.layers and clone.backbone in clone.layers
    text = _text_tower()
    text_clone = towers.Tower.from_config(text.get_config())
    assert text_clone.tokenizer is not None
    assert text_clone.encoder() is text_clone.head


def test_walk_layers_reaches_the_tokenizer_tables():
    found = {
        type(layer).__name__ for layer in towers.walk_layers(_text_tower())
    }
    assert {"TextVectorization", "PackedGRU", "Embedding"} <= found
