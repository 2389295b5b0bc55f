"""pytest-benchmark tests of the grader (packed questions, trained heads), each output checked (see
``case_bench``)."""
import pytest

from case_bench import bench, params
from rbr_fast.bench import grading


@pytest.mark.parametrize("case_name,impl", params(grading))
def test_bench(benchmark, bench_options, case_name, impl):
    bench(benchmark, bench_options, case_name, impl)
