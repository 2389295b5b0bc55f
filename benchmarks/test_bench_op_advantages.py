"""pytest-benchmark tests of the advantage ops (gae, ppo_advantages, masked_whiten, shape_rewards), each
output checked (see ``case_bench``)."""
import pytest

from case_bench import bench, params
from rbr_fast.bench import advantages_cases


@pytest.mark.parametrize("case_name,impl", params(advantages_cases))
def test_bench(benchmark, bench_options, case_name, impl):
    bench(benchmark, bench_options, case_name, impl)
