"""pytest-benchmark tests of the decode-time linear layer (skinny_linear), each output checked (see ``case_bench``)."""
import pytest

from case_bench import bench, params
from rbr_fast.bench import decode_cases


@pytest.mark.parametrize("case_name,impl", params(decode_cases))
def test_bench(benchmark, bench_options, case_name, impl):
    bench(benchmark, bench_options, case_name, impl)
