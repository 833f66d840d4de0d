"""Search with the exported towers: exact top-k, the cached index, HTML."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import run_tool
from vse_tf import errors
from vse_tf.serving import image_index


def _served_embeddings(export_dir, images, texts):
    """Brute-force reference: every image and text through the SavedModels."""
    image_tower = tf.saved_model.load(
        os.path.join(export_dir, "image_tower", "1")
    )
    text_tower = tf.saved_model.load(
        os.path.join(export_dir, "text_tower", "1")
    )
    image_bytes = [tf.io.read_file(str(path)) for path in images]
    return (
        image_tower.signatures["serving_default"](
            image_bytes=tf.stack(image_bytes)
        )["embedding"].numpy(),
        text_tower.signatures["serving_default"](text=tf.constant(texts))[
            "embedding"
        ].numpy(),
    )


def _hits(stdout):
    return re.findall(r"^\s+\d+\.\s+-?[\d.]+\s+(.+)$", stdout, re.M)


@pytest.mark.slow
def test_text_query_ranks_images_by_cosine(trained_run, photo_folder, tmp_path):
    model_dir, _ = trained_run
    export_dir = os.path.join(model_dir, "export")
    folder, captions = photo_folder
    index_dir = tmp_path / "index"
    html_path = tmp_path / "hits.html"
    query = captions[0]
    result = run_tool(
        "search",
        f"--export_dir={export_dir}",
        f"--images={folder}",
        f"--query={query}",
        "--k=3",
        f"--index_dir={index_dir}",
        f"--html={html_path}",
        f"--png={tmp_path / 'hits.png'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    names = sorted(os.listdir(folder))
    images, texts = _served_embeddings(
        export_dir, [folder / n for n in names], [query]
    )
    expected = [names[i] for i in np.argsort(-(texts @ images.T)[0])[:3]]
    assert _hits(result.stdout) == expected
    assert "indexed" in result.stdout
    page = html_path.read_text()
    assert page.count("<img ") == 3 and "data:image/jpeg;base64," in page
    assert query in page
    # The contact sheet: one row of three pictures, the top hit first,
    # each enlarged pixel for pixel to the page's 160 pixels, its score
    # below it and not on it.
    from PIL import Image

    sheet = np.asarray(Image.open(tmp_path / "hits.png"))
    assert sheet.shape == (6 + 22 + 160 + 16 + 6, 6 + 3 * (160 + 6), 3)
    top = Image.open(folder / expected[0]).convert("RGB")
    assert top.size == (32, 32)  # the tiny data's pictures
    enlarged = np.asarray(top).repeat(5, axis=0).repeat(5, axis=1)
    np.testing.assert_array_equal(sheet[28 : 28 + 160, 6 : 6 + 160], enlarged)
    assert (sheet[28 + 160 : 28 + 176, 6:166] < 128).any()  # the label


@pytest.mark.slow
def test_index_is_reused_until_the_images_change(
    trained_run, photo_folder, tmp_path
):
    model_dir, _ = trained_run
    source, _ = photo_folder
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in sorted(os.listdir(source))[:4]:
        (folder / name).write_bytes((source / name).read_bytes())
    args = [
        f"--export_dir={os.path.join(model_dir, 'export')}",
        f"--images={folder}",
        "--query=a red circle",
        f"--index_dir={tmp_path / 'index'}",
        "--k=10",
    ]
    first = run_tool("search", *args)
    again = run_tool("search", *args)
    assert "4 images" in first.stdout and "(indexed" in first.stdout
    assert "(cached index" in again.stdout
    assert _hits(first.stdout) == _hits(again.stdout)
    # The approximate index over so few rows is one list: the exact hits.
    approximate = run_tool("search", *args, "--index=approximate")
    assert approximate.returncode == 0, approximate.stderr[-3000:]
    assert _hits(approximate.stdout) == _hits(first.stdout)
    assert (tmp_path / "index" / "ivf.faiss").exists()
    (folder / "photo7.png").write_bytes((source / "photo7.png").read_bytes())
    grown = run_tool("search", *args, "--index=approximate")
    assert "5 images" in grown.stdout and "(indexed" in grown.stdout
    assert "photo7.png" in _hits(grown.stdout)
    assert _hits(grown.stdout) == _hits(run_tool("search", *args).stdout)
    # As many images, one of them another picture: rebuilt with the rest.
    (folder / "photo0.png").write_bytes((source / "photo6.png").read_bytes())
    changed = run_tool("search", *args, "--index=approximate", "--k=1")
    assert "(indexed" in changed.stdout
    assert _hits(changed.stdout) == _hits(
        run_tool("search", *args, "--k=1").stdout
    )


@pytest.mark.slow
def test_split_of_a_dataset_is_searchable(trained_run, tfds_dir, tmp_path):
    model_dir, _ = trained_run
    result = run_tool(
        "search",
        f"--export_dir={os.path.join(model_dir, 'export')}",
        "--images=shapes/tiny:test",
        f"--data_dir={tfds_dir}",
        "--query=two objects",
        f"--index_dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "40 images" in result.stdout
    assert len(_hits(result.stdout)) == 5


@pytest.mark.slow
def test_caption_for_an_image_ranks_the_caption_file(
    trained_run, photo_folder, tmp_path
):
    model_dir, _ = trained_run
    export_dir = os.path.join(model_dir, "export")
    folder, captions = photo_folder
    candidates = captions + ["a yellow star", "three green squares"]
    caption_file = tmp_path / "captions.txt"
    caption_file.write_text("\n".join(candidates) + "\n")
    photo = folder / "photo0.png"
    result = run_tool(
        "search",
        f"--export_dir={export_dir}",
        f"--captions={caption_file}",
        f"--caption-for={photo}",
        "--k=4",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    images, texts = _served_embeddings(export_dir, [photo], candidates)
    expected = [candidates[i] for i in np.argsort(-(images @ texts.T)[0])[:4]]
    assert _hits(result.stdout) == expected


@pytest.mark.slow
def test_missing_query_file_is_a_clear_error(
    trained_run, photo_folder, tmp_path
):
    model_dir, _ = trained_run
    folder, _ = photo_folder
    result = run_tool(
        "search",
        f"--export_dir={os.path.join(model_dir, 'export')}",
        f"--images={folder}",
        f"--query_file={tmp_path / 'nope.txt'}",
        f"--index_dir={tmp_path / 'index'}",
    )
    assert result.returncode == 2
    assert "does not exist" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_export_dir_without_towers_is_a_clear_error(photo_folder, tmp_path):
    folder, _ = photo_folder
    result = run_tool(
        "search",
        f"--export_dir={tmp_path}",
        f"--images={folder}",
        "--query=a red circle",
    )
    assert result.returncode == 2
    assert "No exported towers" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def _fake_tower(image_bytes):
    """Embeds b"imgN" as the one-hot of N; anything else cannot decode."""
    rows = []
    for encoded in image_bytes.numpy():
        if not encoded.startswith(b"img"):
            raise tf.errors.InvalidArgumentError(
                None, None, "Unknown image file format.\nmore"
            )
        rows.append(np.eye(8, dtype=np.float32)[int(encoded[3:])])
    return {"embedding": tf.constant(np.stack(rows))}


def _collection(contents):
    names = [f"photo{i}.jpg" for i in range(len(contents))]
    return image_index.Collection("folder", names, names, contents.__getitem__)


def test_an_undecodable_image_is_skipped_and_named(tmp_path, capsys):
    # A text file named .jpg in the middle of a batch of three.
    collection = _collection([b"img0", b"img1", b"<html>", b"img3", b"img4"])
    (tmp_path / "saved_model.pb").write_bytes(b"a tower")
    embeddings, cached, kept = image_index.load_or_build(
        collection, _fake_tower, str(tmp_path), str(tmp_path / "index")
    )
    assert not cached
    assert kept.names == [
        "photo0.jpg",
        "photo1.jpg",
        "photo3.jpg",
        "photo4.jpg",
    ]
    np.testing.assert_array_equal(embeddings.argmax(1), [0, 1, 3, 4])
    out = capsys.readouterr().out
    assert "Skipped 1 of 5 images" in out and "photo2.jpg" in out
    assert "Unknown image file format" in out
    assert kept.read(2) == b"img3"
    # The cache keeps the skip, and says so again.
    again, cached, kept_again = image_index.load_or_build(
        collection, _fake_tower, str(tmp_path), str(tmp_path / "index")
    )
    assert cached and kept_again.names == kept.names
    np.testing.assert_array_equal(again, embeddings)
    assert "photo2.jpg" in capsys.readouterr().out


def test_an_undecodable_image_can_stop_the_search(tmp_path):
    collection = _collection([b"img0", b"<html>", b"img2"])
    with pytest.raises(
        errors.UserError,
        match="'photo1.jpg' could not be decoded .*Unknown image file format",
    ):
        list(
            image_index.embed_images(
                _fake_tower,
                collection,
                {},
                batch_size=2,
                progress=False,
                on_bad_image="error",
            )
        )
