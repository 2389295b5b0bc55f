"""pytest-benchmark tests of every registered case (advantage and log-prob ops, grader): one benchmark per
(case, implementation) at the case's default size, from the same registry as ``python -m rbr_fast.bench``.

Before a peer is timed, its output is checked against ours on the same inputs, so a benchmark never
compares two different functions.
"""
import pytest
import torch

from rbr_fast.bench import CASES, Skip
from rbr_fast.bench.harness import check_peer, size_str

PARAMS = [pytest.param(c.name, impl, id=f"{c.name}-{impl or 'ours'}") for c in CASES.values() for impl in (None, *c.peers)]


@pytest.mark.parametrize("case_name,impl", PARAMS)
def test_bench(benchmark, bench_options, case_name, impl):
    case = CASES[case_name]
    try:
        inputs = case.build(case.default_size, bench_options.device)
    except Skip as e:
        pytest.skip(str(e))
    ours = case.ours(inputs)
    fn = case.ours
    if impl is not None:
        peer = case.peers[impl]
        try:
            fn, _ = peer.setup(inputs, bench_options)
        except Skip as e:
            pytest.skip(str(e))
        check_peer(case, peer, inputs, ours, fn(inputs))

    def call():
        out = fn(inputs)
        if bench_options.device.type == "cuda":  # time the kernels, not their launch
            torch.cuda.synchronize()
        return out

    benchmark.group = f"{case.name} {size_str(case.default_size)}"
    benchmark.extra_info["bytes"] = case.nbytes(inputs)
    benchmark(call)
