"""pytest-benchmark of the served grader (llama-cpp-python's server on 127.0.0.1, the embedded
GGUF) against the in-process question path, on one gold completion and four propositions (CI-sized),
with the server's prefix reuse kept (a completion's questions in order) and defeated (each request
after another completion's). The side-by-side table at full size: ``benchmarks/served_grader.py``."""
import importlib.util
import sys
from pathlib import Path

import pytest

from rbr_fast import data
from rbr_fast.data.readers import read_jsonl
from rbr_fast.grading import Grader, embedded

pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (make test builds it)")
if importlib.util.find_spec(embedded.PACKAGE) is None:
    pytest.skip(f"embedded model not installed ({embedded.INSTALL})", allow_module_level=True)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from llama_server import LlamaServer  # noqa: E402

NAMES = ["apology", "inability_to_comply", "judgement", "fully_complies"]


@pytest.fixture(scope="module")
def setting():
    rows = read_jsonl(data.gold(), limit=2)
    server = LlamaServer(embedded.gguf_path())
    yield [r.conversation for r in rows], [r.completion for r in rows], server
    server.stop()


@pytest.mark.parametrize("path", ["in-process", "served", "served-no-prefix"])
def test_bench_served_grader(benchmark, setting, path):
    convs, comps, server = setting
    benchmark.group = "grader: 2 gold completions x 4 propositions, embedded SmolLM2, zero-shot"
    if path == "in-process":
        g = Grader.default(dtype="float32", trained=False, progress=False)
        out = benchmark(lambda: g.grade(convs, comps, NAMES))
        assert out.p_yes.shape == (2, 4)
        return
    g = Grader.from_server(server.url, concurrency=1, progress=False)
    groups = g.served_prompts(convs, comps, NAMES)
    if path == "served-no-prefix":  # question-major: consecutive requests share only the instructions
        groups = [[grp[j]] for j in range(len(NAMES)) for grp in groups]
    out = benchmark(lambda: g.client.ask(groups))
    assert sum(len(x) for x in out) == 8 and all(0 <= p <= 1 for x in out for p, _ in x)
