"""Shared set-up for the pytest-benchmark tests of rbr_fast ops.

``pytest benchmarks --benchmark-disable`` runs every benchmark once (a CI smoke test of the cases
and of peer agreement); without that flag pytest-benchmark times them. torch.compile peers are
skipped unless RBR_FAST_BENCH_COMPILE_BUDGET (seconds) is set, since one compile takes 20+ s on CPU.
"""
import os

import pytest
import torch

from rbr_fast.bench import Options


@pytest.fixture(scope="session")
def bench_options() -> Options:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return Options(device=device, compile_budget_s=float(os.environ.get("RBR_FAST_BENCH_COMPILE_BUDGET", "0")))
