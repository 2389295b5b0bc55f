"""pytest-benchmark tests of the log-prob ops (yes/no and per-token log-probs, plain and fused with the LM
head), each output checked (see ``case_bench``)."""
import pytest

from case_bench import bench, params
from rbr_fast.bench import logprobs_cases


@pytest.mark.parametrize("case_name,impl", params(logprobs_cases))
def test_bench(benchmark, bench_options, case_name, impl):
    bench(benchmark, bench_options, case_name, impl)
