"""tools/compare_losses.py: its table, claims, warm-start rows and plot, on
hand-made metrics and curves."""

import argparse
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tools import compare_losses


def _metrics(rsum, cosine=None):
    # R@1, R@5, R@10 each way: rsum / 6 each, so the columns are checkable.
    metrics = {c: rsum / 6 for c in compare_losses.COLUMNS}
    metrics["rsum"] = rsum
    if cosine is not None:
        metrics["cosine"] = {c: cosine / 6 for c in compare_losses.COLUMNS}
        metrics["cosine"]["rsum"] = cosine
    return metrics


def test_table_gives_the_mean_and_range_over_seeds():
    table = compare_losses.markdown_table(
        {
            "all_negatives": [_metrics(300), _metrics(306)],
            "vse0": [_metrics(240), _metrics(246)],
        },
        {"all_negatives": "10"},
    )
    rows = table.splitlines()
    assert rows[0].startswith("| row | epochs | seeds | i2t R@1")
    assert "corrected" not in rows[0]
    assert rows[2] == (
        "| ConVSE (all negatives) | 10 | 2 | "
        + " | ".join(["50.5"] * 6)
        + " | 303.0 | 300.0 - 306.0 |"
    )


def test_corrected_runs_rank_by_cosine_with_the_corrected_rsum_beside():
    table = compare_losses.markdown_table(
        {"vse0": [_metrics(250, cosine=240), _metrics(254, cosine=246)]}
    )
    header, rule, row = table.splitlines()
    assert header.endswith("| rsum range | corrected rsum | corrected range |")
    assert rule.count("|---") == header.count("|") - 1
    # R@K and rsum by plain cosine first, then the corrected rsum.
    assert row.endswith(
        "| 40.5 | 243.0 | 240.0 - 246.0 | 252.0 | 250.0 - 254.0 |"
    )


def test_a_difference_is_claimed_only_beyond_the_spread():
    lines = compare_losses.claims(
        {
            "all_negatives": [_metrics(300, 290), _metrics(306, 296)],
            "vse0": [_metrics(240, 230), _metrics(246, 236)],
            # Ahead of VSE0 by cosine within the spread; behind it corrected.
            "vse_pp": [_metrics(200, 234), _metrics(210, 238)],
        }
    ).splitlines()

    def verdict(better, worse):
        [line] = [line for line in lines if f"{better} vs {worse}" in line]
        return line

    assert "by cosine, better beyond the spread" in verdict(
        "ConVSE (all negatives)", "VSE0"
    )
    line = verdict("VSE++ (max of hinges)", "VSE0")
    assert "by cosine, within the spread; no difference claimed" in line
    assert "corrected, the other way beyond the spread" in line


def test_a_warm_started_row_begins_where_its_base_ended():
    curves = {
        "vse_pp_base": [[100, 200], [110, 210]],
        "hardest_negative_from_base": [
            [100, 200, 204, 230],
            [110, 210, 212, 240],
        ],
    }
    line = compare_losses.warm_start_lines(curves)
    assert line == (
        "- ConVSE++ from the VSE++ base: the base ended at val "
        "rsum 205.0; its first epoch scores 208.0."
    )


def _args(tmp_path, stage_epochs):
    return argparse.Namespace(
        out_dir=str(tmp_path),
        stage_epochs=stage_epochs,
        gin_file=["gin/demo.gin"],
        gin_bindings=[],
        data_dir=None,
    )


def test_rows_train_in_stages_of_e_and_reuse_only_a_run_of_that_length(
    tmp_path,
):
    args = _args(tmp_path, 5)
    assert compare_losses.epochs_of("vse_pp_base", args) == 5
    assert compare_losses.epochs_of("hardest_negative_from_base", args) == 5
    assert (
        compare_losses.epochs_label("hardest_negative_from_base", args)
        == "5 + 5"
    )
    assert compare_losses.epochs_of("vse0", args) == 10
    assert compare_losses.epochs_of("vse0", _args(tmp_path, None)) is None
    folder = tmp_path / "vse0" / "seed0"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text('{"rsum": 1.0}')
    (folder / "operative_config.gin").write_text("train.epochs = 8\n")
    with pytest.raises(SystemExit, match="holds a run of 8 epochs, not 10"):
        compare_losses.train_one("vse0", 0, args)
    (folder / "operative_config.gin").write_text("train.epochs = 10\n")
    assert compare_losses.train_one("vse0", 0, args) == {"rsum": 1.0}


def test_two_stage_rows_need_the_stage_length():
    result = subprocess.run(
        [sys.executable, "-m", "tools.compare_losses", "--rows", "vse_pp_base"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "need --stage_epochs" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_plot_is_a_png(tmp_path):
    path = tmp_path / "plot.png"
    compare_losses.plot(
        {
            "vse_pp_base": [[100, 200], [110, 210]],
            "hardest_negative_from_base": [[100, 200, 204], [110, 210, 212]],
        },
        str(path),
        "title",
        stage_epochs=2,
    )
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
