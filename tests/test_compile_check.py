"""`rbr-fast compile-check`: every Triton kernel the ops launch compiles for sm_80 and sm_90 without a GPU,
with no register spills (run in a subprocess: the test session interprets Triton, which cannot compile)."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
KERNELS = ("_gae_kernel", "_row_moments_kernel", "_whiten_apply_kernel", "_shape_rewards_kernel", "_yes_no_kernel",
           "_label_kernel", "_label_backward_kernel", "_rbr_reward_kernel")


def test_every_kernel_compiles_for_sm80_and_sm90_without_spills(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-m", "rbr_fast", "compile-check", "--arch", "sm_80,sm_90"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = [line for line in r.stdout.splitlines() if line.startswith("_")]
    for kernel in KERNELS:
        for arch in ("sm_80", "sm_90"):
            assert any(line.startswith(kernel + "[") and f" {arch} " in line for line in rows), (kernel, arch)
    for line in rows:  # kernel, arch, registers, spill bytes, ...
        fields = line.split()
        assert 0 < int(fields[2]) <= 255 and fields[3] == "0", line
    assert "without spills" in r.stdout.splitlines()[-1]


def test_interpreted_triton_is_refused_in_one_line(monkeypatch, capsys):
    from rbr_fast.cli import main
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert main(["compile-check"]) == 2
    assert "TRITON_INTERPRET is set" in capsys.readouterr().err
