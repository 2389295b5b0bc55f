"""What every ``test_bench_*.py`` runs: one pytest-benchmark test per (case, implementation) of a module
of registered cases (``rbr_fast.bench.*_cases``, the registry ``python -m rbr_fast.bench`` times), at
the case's default size.

The benchmarked call's own output is checked, within the case's tolerance: ours against the same call
on the PyTorch reference backend (``RBR_FAST_BACKEND=ref``), a peer against ours. So a benchmark
never times a wrong result, nor compares two different functions.
"""
from types import ModuleType

import pytest
import torch

from rbr_fast.bench import CASES, Skip
from rbr_fast.bench.harness import as_tuple, check_peer, max_error, size_str


def params(cases_module: ModuleType) -> list:
    """(case name, implementation: None for ours, else a peer's name) of each case the module registers."""
    return [pytest.param(c.name, impl, id=f"{c.name}-{impl or 'ours'}") for c in CASES.values()
            if c.ours.__module__ == cases_module.__name__ for impl in (None, *c.peers)]


def bench(benchmark, options, case_name: str, impl) -> None:
    case = CASES[case_name]
    try:
        inputs = case.build(case.default_size, options.device)
    except Skip as e:
        pytest.skip(str(e))
    if impl is None:
        fn = case.ours
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("RBR_FAST_BACKEND", "ref")
            expected = case.ours(inputs)
    else:
        peer = case.peers[impl]
        try:
            fn, _ = peer.setup(inputs, options)
        except Skip as e:
            pytest.skip(str(e))
        expected = case.ours(inputs)

    def call():
        out = fn(inputs)
        if options.device.type == "cuda":  # time the kernels, not their launch
            torch.cuda.synchronize()
        return out

    benchmark.group = f"{case.name} {size_str(case.default_size)}"
    benchmark.extra_info["bytes"] = case.nbytes(inputs)
    out = benchmark(call)  # with --benchmark-disable: one call
    if impl is None:
        err = max_error(as_tuple(expected), as_tuple(out), inputs.get("mask"))
        assert err <= case.tol, f"{case.name}: ours differs from the reference backend (max rel. error {err:.3g})"
    else:
        check_peer(case, peer, inputs, expected, out)
