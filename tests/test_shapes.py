"""The built-in `shapes` dataset: determinism, layout, and honest captions."""

import os
import re

import numpy as np
import tensorflow_datasets as tfds

from vse_tf.data import scenes
from vse_tf.data import shapes

SHAPE_WORDS = {
    w: shape for shape, words in scenes._SHAPE_WORDS.items() for w in words
}
COUNT_WORDS = {w: i for i, w in enumerate(scenes._COUNT_WORDS)}


def _examples(n=300):
    return [
        scenes.make_example(seed=0, split_index=0, index=i) for i in range(n)
    ]


def test_examples_are_a_pure_function_of_seed_split_and_index():
    a_image, a_captions, _ = scenes.make_example(3, 1, 17)
    b_image, b_captions, _ = scenes.make_example(3, 1, 17)
    c_image, _, _ = scenes.make_example(4, 1, 17)
    np.testing.assert_array_equal(a_image, b_image)
    assert a_captions == b_captions
    assert not np.array_equal(a_image, c_image)


def test_scenes_cover_the_promised_variety():
    objects = [o for _, _, objs in _examples() for o in objs]
    counts = {len(objs) for _, _, objs in _examples()}
    assert counts == {1, 2, 3, 4}
    assert {o.colour for o in objects} == set(scenes.COLOURS)
    assert len(scenes.COLOURS) >= 6
    assert {o.shape for o in objects} == set(scenes.SHAPES)
    assert len(scenes.SHAPES) >= 5
    assert {o.size for o in objects} == {"small", "large"}


def test_captions_only_mention_what_the_image_holds():
    for _, captions, objects in _examples():
        colours = {o.colour for o in objects}
        kinds = {o.shape for o in objects}
        for caption in captions:
            words = caption.replace(",", "").split()
            assert {w for w in words if w in scenes.COLOURS} <= colours
            mentioned = {SHAPE_WORDS[w] for w in words if w in SHAPE_WORDS}
            mentioned |= {"cross"} if "plus sign" in caption else set()
            assert mentioned <= kinds, caption
            count = re.match(
                r"^(?:.*?: )?(one|two|three|four) "
                r"(?:shapes?|objects?|things?)\b",
                caption,
            )
            if count:
                assert COUNT_WORDS[count.group(1)] == len(objects), caption


def test_relations_are_true_of_the_picture():
    checked = 0
    for _, captions, objects in _examples():
        for caption in captions:
            caption = caption.replace("plus sign", "cross")
            match = re.search(
                r"(\w+) (?:is |sits )?(to the left of|to the "
                r"right of|above|below) (?:a|one) (?:\w+ )?"
                r"(\w+) (\w+)$",
                caption,
            )
            if not match or len(objects) < 2:
                continue
            shape_a = SHAPE_WORDS[match.group(1)]
            colour_b, shape_b = match.group(3), SHAPE_WORDS[match.group(4)]
            # Some pair with these attributes stands in this relation.
            assert any(
                scenes.relation(a, b) == match.group(2)
                for a in objects
                for b in objects
                if a is not b
                and a.shape == shape_a
                and b.colour == colour_b
                and b.shape == shape_b
            ), caption
            checked += 1
    assert checked > 50


def test_captions_vary_in_wording_and_content():
    captions = [c for _, caps, _ in _examples() for c in caps]
    # Five per image, never five copies of one sentence.
    for _, caps, _ in _examples():
        assert len(caps) == scenes.CAPTIONS_PER_IMAGE
        assert len(set(caps)) >= 4
    first_words = {c.split()[0] for c in captions}
    assert len(first_words) >= 8
    assert any("left of" in c for c in captions)
    assert any("above" in c for c in captions)
    # No caption style always comes first.
    assert len({caps[0].split()[0] for _, caps, _ in _examples()}) >= 5


def test_default_config_has_the_flickr30k_test_size():
    config = shapes.Shapes.builder_configs["default"]
    assert config.image_size == 64
    assert config.num_test == 1000  # x 5 captions = 5,000


def test_tfds_builder_generates_offline_and_deterministically(
    tfds_dir, tmp_path
):
    first = tfds.load("shapes/tiny", split="test", data_dir=tfds_dir)
    # A second generation in another folder gives the same examples.
    tfds.builder("shapes/tiny", data_dir=str(tmp_path)).download_and_prepare()
    second = tfds.load("shapes/tiny", split="test", data_dir=str(tmp_path))

    def by_id(ds):
        return {int(e["image_id"]): e for e in tfds.as_numpy(ds)}

    a, b = by_id(first), by_id(second)
    assert len(a) == 40 and a.keys() == b.keys()
    for image_id, example in a.items():
        np.testing.assert_array_equal(example["image"], b[image_id]["image"])
        assert list(example["captions"]) == list(b[image_id]["captions"])
        assert example["image"].shape == (32, 32, 3)
        assert example["captions"].shape == (5,)


def test_image_ids_are_unique_across_splits(tfds_dir):
    ids = []
    for split in ("train", "val", "test"):
        ds = tfds.load("shapes/tiny", split=split, data_dir=tfds_dir)
        ids += [int(e["image_id"]) for e in tfds.as_numpy(ds)]
    assert len(ids) == len(set(ids)) == 256 + 40 + 40
    assert max(ids) < 2**24  # exact as the float32 target of a loss


def test_captions_do_not_depend_on_the_process_hash_seed():
    # Python salts str hashes per process (PYTHONHASHSEED): anything that
    # follows a set's order would make each generation of the data differ.
    import subprocess
    import sys

    script = (
        "from vse_tf.data import scenes\n"
        "for i in range(300):\n"
        "    print(scenes.make_example(0, 1, i, 32)[1])\n"
    )
    outputs = [
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    ]
    assert outputs[0] == outputs[1]
