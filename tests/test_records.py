"""A caption file prepared as sharded records reads back as the caption
file does; a stopped prepare leaves whole shards and finishes on a rerun."""

import os

import numpy as np
import pytest

from tests.conftest import run_tool
from tests.test_caption_files import write_caption_file
from vse_tf import errors
from vse_tf.data import pipeline
from vse_tf.data import records

COUNTS = [1, 3, 2, 5, 4, 1, 2, 2, 3]
SPLITS = [
    "train",
    "test",
    "train",
    "val",
    "test",
    "train",
    "train",
    "val",
    "train",
]


def _all(examples):
    return list(examples.as_numpy_iterator())


@pytest.fixture
def caption_file(tmp_path):
    return f"csv:{write_caption_file(tmp_path / 'own', COUNTS, SPLITS)}"


def test_records_read_back_as_the_caption_file(caption_file, tmp_path):
    out = str(tmp_path / "records")
    manifest = records.prepare(caption_file, out, shard_size=2)
    assert manifest["shards"]["train"] == [
        records.shard_name("train", i, 3) for i in range(3)
    ]
    assert manifest["sizes"]["train"] == {
        "images": 5,
        "captions": 9,
        "captions_per_image": None,
    }
    for split in ("train", "val", "test"):
        prepared = pipeline.load_examples(f"records:{out}", split)
        direct = pipeline.load_examples(caption_file, split)
        assert int(prepared.cardinality()) == int(direct.cardinality())
        for a, b in zip(_all(prepared), _all(direct), strict=True):
            np.testing.assert_array_equal(a["image"], b["image"])
            assert a["captions"].tolist() == b["captions"].tolist()
            assert a["image_id"] == b["image_id"]
        captions = pipeline.load_captions(f"records:{out}", split)
        assert int(captions.cardinality()) == sum(
            c for c, s in zip(COUNTS, SPLITS) if s == split
        )
        assert _all(captions) == _all(
            pipeline.load_captions(caption_file, split)
        )


def _files(folder):
    return {
        name: open(os.path.join(folder, name), "rb").read()
        for name in sorted(os.listdir(folder))
    }


def test_a_stopped_prepare_leaves_whole_shards_and_a_rerun_finishes(
    caption_file, tmp_path, monkeypatch
):
    whole = str(tmp_path / "whole")
    records.prepare(caption_file, whole, shard_size=2)
    stopped = str(tmp_path / "stopped")
    write = records._example
    written = []

    def stop_at_the_fourth_photo(*args):
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(args)
        return write(*args)

    monkeypatch.setattr(records, "_example", stop_at_the_fourth_photo)
    with pytest.raises(KeyboardInterrupt):
        records.prepare(caption_file, stopped, shard_size=2)
    # One whole shard of two photos; the second, half written, is gone.
    assert sorted(os.listdir(stopped)) == [records.shard_name("train", 0, 3)]
    with pytest.raises(errors.DatasetError, match="vse_tf.prepare"):
        pipeline.load_examples(f"records:{stopped}", "train")
    monkeypatch.setattr(records, "_example", write)
    first_shard = os.path.join(stopped, records.shard_name("train", 0, 3))
    written_at = os.stat(first_shard).st_mtime_ns
    records.prepare(caption_file, stopped, shard_size=2)
    assert os.stat(first_shard).st_mtime_ns == written_at  # kept, not redone
    assert _files(stopped) == _files(whole)


@pytest.mark.slow
def test_prepare_then_train_on_the_records(caption_file, tmp_path):
    from tests.conftest import bindings

    out = tmp_path / "records"
    result = run_tool(
        "prepare",
        f"--dataset={caption_file}",
        f"--output={out}",
        "--shard_size=3",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "records.json" in result.stdout
    result = run_tool(
        "train",
        "--gin_file=gin/demo.gin",
        *bindings(
            [
                f"train.dataset = 'records:{out}'",
                "load_examples.image_size = 32",
                "train.batch_size = 4",
                "train.projector_images = 0",
                "train.export = False",
            ]
        ),
        f"--model_dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Test metrics" in result.stdout
    bad = run_tool("prepare", "--dataset=flickr8k", f"--output={out}")
    assert bad.returncode == 2 and "not a caption file" in bad.stderr
