"""tools/compare_features.py: the cosine of each row between two caches."""

import subprocess
import sys

import numpy as np

from tests.conftest import REPO


def _cache(path, image, captions, ids):
    np.savez(path, signature="s", image=image, captions=captions, image_id=ids)


def test_rows_are_compared_with_their_own_counterpart(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.standard_normal((3, 2, 4)).astype(np.float32)
    captions = rng.standard_normal((3, 5, 6)).astype(np.float32)
    other = image.copy()
    other[1, 0] = -other[1, 0]  # one view of one image reversed
    _cache(tmp_path / "a.npz", image, captions, np.arange(3))
    _cache(tmp_path / "b.npz", other, 2 * captions, np.arange(3))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.compare_features",
            str(tmp_path / "a.npz"),
            str(tmp_path / "b.npz"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rows = {
        line.split("|")[1].strip(): line.split("|")[2:6]
        for line in result.stdout.splitlines()[2:]
    }
    # Six image rows: five equal, one reversed (cosine -1).
    assert rows["image"][0].strip() == "6"
    assert float(rows["image"][3]) == -1.0 and float(rows["image"][1]) == 1.0
    # Scaling does not change a cosine.
    assert float(rows["captions"][3]) == 1.0


def test_caches_of_other_images_are_refused(tmp_path):
    image = np.ones((2, 1, 3), np.float32)
    _cache(tmp_path / "a.npz", image, np.ones((2, 5, 3)), np.arange(2))
    _cache(tmp_path / "b.npz", image, np.ones((2, 5, 3)), np.arange(2) + 7)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.compare_features",
            str(tmp_path / "a.npz"),
            str(tmp_path / "b.npz"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "other images" in result.stderr
