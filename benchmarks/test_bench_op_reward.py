"""pytest-benchmark tests of the RBR reward op and weight fitting, each output checked (see ``case_bench``)."""
import pytest

from case_bench import bench, params
from rbr_fast.bench import reward_cases


@pytest.mark.parametrize("case_name,impl", params(reward_cases))
def test_bench(benchmark, bench_options, case_name, impl):
    bench(benchmark, bench_options, case_name, impl)
