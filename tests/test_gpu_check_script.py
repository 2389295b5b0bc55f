"""The GPU check script's steps, run on this CPU (``GPU_CHECK_DRY=1``: interpreted kernels, tiny sizes):
what can break without a GPU (arguments, paths, the table and the CSV) breaks here first."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run(tmp_path):
    env = {**os.environ, "GPU_CHECK_DRY": "1", "PYTHON": sys.executable}
    env.pop("RBR_FAST_BACKEND", None)
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "passed" in (tmp_path / "tests.txt").read_text()
    csv = (tmp_path / "bench.csv").read_text()
    assert "gae" in csv and "rbr_fast(out=)" in csv and "trl ChunkedLogProbFunction" in csv
    for name in ("env.txt", "bench.txt"):
        assert (tmp_path / name).stat().st_size > 0
