"""tools/gpu_check.py's CPU path, as CI runs it: the same checks as on a
GPU, at tiny sizes, so that the script is ready the day a GPU is."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_every_check_passes_on_the_cpu_and_is_reported(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tools.gpu_check", f"--out_dir={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(tmp_path / "gpu_check.json") as f:
        report = json.load(f)
    assert report["sizes"] == "tiny"
    checks = report["checks"]
    assert set(checks) == {"devices", "replicas", "gru", "step", "evaluation"}
    assert all(check["ok"] for check in checks.values())
    assert checks["replicas"]["gradient_relative_error"] < 1e-4
    assert checks["step"]["float32_ms"] > 0
    assert checks["step"]["mixed_bfloat16_ms"] > 0
    table = (tmp_path / "gpu_check.md").read_text()
    assert table.count("| pass |") == 5
