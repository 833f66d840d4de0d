"""The cost-curve benchmarks run end to end at tiny sizes, so that they
cannot rot: each writes its JSON and its plots, and what it measures
holds (recall is a share, exact search finds itself, the file on disk has
the rows' size, evaluation's traced memory holds its scores)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _run(*args):
    result = subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_search_curve(tmp_path):
    pytest.importorskip("faiss")
    _run(
        "-m",
        "tools.bench_search",
        "--sizes",
        "3000",
        "6000",
        "--nprobe",
        "1",
        "1000",
        "--repeats=1",
        f"--json={tmp_path / 's.json'}",
        f"--plot={tmp_path / 's.png'}",
        f"--folder={tmp_path}",
    )
    with open(tmp_path / "s.json") as f:
        figures = json.load(f)
    sizes = [r["size"] for r in figures["results"]]
    assert sizes == [3000, 6000]
    for result in figures["results"]:
        assert result["file_mib"] == pytest.approx(
            result["size"] * 512 * 4 / 2**20, rel=0.01
        )
        probes = result["approximate"]["probes"]
        # Every list probed is the exact scan; one list finds less.
        assert probes[1]["recall_at_10"] == 1.0
        assert 0 < probes[0]["recall_at_10"] < 1
    assert (tmp_path / "s.png").stat().st_size > 0
    assert (tmp_path / "s_memory.png").stat().st_size > 0
    # The index files (2 GiB at 10^6) do not outlive the run.
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "s.json",
        "s.png",
        "s_memory.png",
    ]


def test_evaluation_curve(tmp_path):
    _run(
        "-m",
        "tools.bench_eval",
        "--curve",
        "200",
        "400",
        "--dim=32",
        "--repeats=1",
        f"--json={tmp_path / 'e.json'}",
        f"--plot={tmp_path / 'e.png'}",
    )
    with open(tmp_path / "e.json") as f:
        figures = json.load(f)
    points = figures["points"]
    assert [p["captions"] for p in points] == [1000, 2000]
    # Measured, not computed: at 400 images one chunk holds every score,
    # so the traced peak is at least the 400 x 2000 float32 matrix.
    assert points[1]["vse_tf_peak_mb"] >= 400 * 2000 * 4 / 1e6
    assert set(figures["growth"]) == {"matmul_s", "vse_tf_s", "vse_tf_peak_mb"}
    assert (tmp_path / "e_memory.png").stat().st_size > 0


@pytest.mark.slow
def test_step_curve(tmp_path):
    _run(
        "-m",
        "tools.bench_batch",
        "--configs=precomp",
        "--batches",
        "4",
        "8",
        "--steps=2",
        "--warmup=1",
        f"--json={tmp_path / 'b.json'}",
        f"--plot={tmp_path / 'b.png'}",
    )
    with open(tmp_path / "b.json") as f:
        figures = json.load(f)
    # Two measurements: the loss alone is a part of the whole step.
    for point in figures["points"]:
        assert 0 < point["loss_ms"] < point["step_ms"]
    assert set(figures["growth"]) == {"precomp step", "precomp loss"}
    assert (tmp_path / "b.png").stat().st_size > 0
