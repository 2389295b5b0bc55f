"""Shared fixtures: backend selection and poisoned allocations.

On a machine without CUDA the Triton kernels run through Triton's interpreter, which must be
switched on before triton is first imported: hence the environment is set here, at collection.
"""
import importlib.util
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from rbr_fast.ops import extension  # noqa: E402

HAS_TRITON = importlib.util.find_spec("triton") is not None
from common import DEVICE  # noqa: E402


@pytest.fixture(autouse=True)
def _node_graders_dir(tmp_path, monkeypatch):
    """Each test's grader loads (and its subprocesses') are recorded in its own folder, not the node's."""
    monkeypatch.setenv("RBR_FAST_NODE_DIR", str(tmp_path / "node-graders"))


def _backend_params():
    params = [pytest.param("ref", id="ref")]
    params.append(pytest.param("cpp", id="cpp", marks=pytest.mark.skipif(
        not extension.available(), reason=f"C++ extension not available: {extension.unavailable_reason()}")))
    # the C++ kernels with two vector widths run at 16 lanes on an AVX-512 CPU: cover the 8 too
    params.append(pytest.param("cpp8", id="cpp8", marks=pytest.mark.skipif(
        not extension.available() or extension.module().simd_lanes() == 8,
        reason="the C++ kernels run at 8 lanes on this CPU: the cpp case covers them")))
    params.append(pytest.param("triton", id="triton", marks=[pytest.mark.triton, pytest.mark.skipif(
        not HAS_TRITON, reason="triton is not installed")]))
    return params


@pytest.fixture(params=_backend_params())
def backend(request, monkeypatch):
    """Force one backend for the test through RBR_FAST_BACKEND; yields its name ("cpp8": the C++
    backend with its kernels held to 8 lanes)."""
    name = request.param
    if name.startswith("cpp") and DEVICE != "cpu":
        pytest.skip("tests run on CUDA tensors here; the C++ backend takes CPU tensors only")
    monkeypatch.setenv("RBR_FAST_BACKEND", "cpp" if name == "cpp8" else name)
    if name != "cpp8":
        yield name
        return
    lanes = extension.module().simd_lanes()
    extension.module().simd_lanes(8)
    try:
        yield name
    finally:
        extension.module().simd_lanes(lanes)


@pytest.fixture
def poisoned():
    """Every torch/ATen allocation (incl. inside the C++ extension) is filled with NaN (integers with
    their max), so an output element a kernel forgets to write fails the comparison."""
    import torch.utils.deterministic as det
    prev = (torch.are_deterministic_algorithms_enabled(), det.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(True, warn_only=True)
    det.fill_uninitialized_memory = True
    yield
    torch.use_deterministic_algorithms(prev[0])
    det.fill_uninitialized_memory = prev[1]


@pytest.fixture(scope="session")
def tiny_grader_dir(tmp_path_factory):
    """The tiny random grader saved as a transformers folder: what adapters load by path (``model=``)."""
    from rbr_fast.bench import tiny_lm
    path = tmp_path_factory.mktemp("tiny_grader")
    tiny_lm.model().save_pretrained(path)
    tiny_lm.tokenizer().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def lazy_reward():
    """The tiny grader's RBR reward (default spec and weights) as the reward server takes it: a
    ``LazyReward``, whose ``.reward.score`` is what a served answer must equal."""
    from rbr_fast.bench import tiny_lm
    from rbr_fast.grading import Grader
    from rbr_fast.integrations.lazy_reward import LazyReward
    from rbr_fast.reward import RuleBasedReward
    return LazyReward(RuleBasedReward(Grader(tiny_lm.model(), tiny_lm.tokenizer(), progress=False)))
