"""Placement checks (``rbr_fast.integrations.placement``), run on the CPU: the CUDA queries are
monkeypatched to stand for the trainers' situations (no visible GPU, a card vLLM has filled)."""
import socket
from pathlib import Path

import pytest
import torch

from rbr_fast.cli import main
from rbr_fast.errors import UserError
from rbr_fast.grading import embedded
from rbr_fast.integrations import lazy_reward as lazy_module
from rbr_fast.integrations.lazy_reward import LazyReward
from rbr_fast.integrations.placement import GiB, PlacementError, check_placement, needed_bytes, weight_bytes
from rbr_fast.integrations.trl import RBRReward

MiB = 1 << 20


@pytest.fixture
def loads(monkeypatch):
    """Records the grader loads instead of making them (nothing may load on a device that fails)."""
    calls = []
    monkeypatch.setattr(lazy_module.RuleBasedReward, "load", classmethod(lambda cls, *a, **k: calls.append(k) or "R"))
    return calls


def gpus(monkeypatch, count: int, free: int = 0, total: int = 80 * GiB):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, total))


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and isinstance(e.value, UserError)
    return msg


@pytest.mark.parametrize("device", ["cuda", "cuda:1", torch.device("cuda", 0)])
def test_no_visible_gpu(tiny_grader_dir, monkeypatch, loads, device):
    gpus(monkeypatch, 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # as TRL's async GRPO worker
    with pytest.raises(PlacementError) as e:
        LazyReward(model=tiny_grader_dir, device=device).reward
    msg = one_line(e)
    for part in ("sees no GPU", "CUDA_VISIBLE_DEVICES=''", "verl's reward-loop workers", "TRL's async GRPO worker",
                 'device="cpu"', "rbr-fast serve"):
        assert part in msg
    assert loads == []


def test_cuda_index_out_of_range(tiny_grader_dir, monkeypatch, loads):
    gpus(monkeypatch, 1, free=40 * GiB)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(PlacementError) as e:
        LazyReward(model=tiny_grader_dir, device="cuda:1").reward
    assert "sees 1 GPU(s), cuda:0..cuda:0 (CUDA_VISIBLE_DEVICES='3'" in one_line(e) and loads == []
    assert LazyReward(model=tiny_grader_dir, device="cuda:0").reward == "R"


def test_weight_estimates(tiny_grader_dir, tmp_path):
    files = sum(f.stat().st_size for f in Path(tiny_grader_dir).glob("*.safetensors"))
    assert files > 0 and weight_bytes(tiny_grader_dir) == files
    assert needed_bytes(tiny_grader_dir) == 2 * files + GiB
    assert weight_bytes(None) == embedded.weight_bytes(torch.bfloat16) == embedded.PARAMS * 2  # auto on CUDA: bf16
    assert 260e6 < weight_bytes(None) < 280e6 and weight_bytes("embedded", "float32") == embedded.PARAMS * 4
    (tmp_path / "pytorch_model.bin").write_bytes(b"x" * 1000)
    assert weight_bytes(str(tmp_path)) == 1000 and weight_bytes(str(tmp_path / "pytorch_model.bin")) == 1000
    assert weight_bytes("org/not-on-disk") is None and needed_bytes("org/not-on-disk") == GiB


def test_memory_taken_by_vllm(tiny_grader_dir, monkeypatch, loads):
    need = needed_bytes(tiny_grader_dir)
    gpus(monkeypatch, 1, free=need - MiB)  # what gpu_memory_utilization=0.9 leaves on a busy card
    with pytest.raises(PlacementError) as e:
        LazyReward(model=tiny_grader_dir, device="cuda").reward
    msg = one_line(e)
    assert f"{(need - MiB) / GiB:.2f} GiB free of 80.00 GiB" in msg and f"needs about {need / GiB:.2f} GiB" in msg
    assert "gpu_memory_utilization share of the card (vLLM's default 0.9): lower it" in msg
    assert 'device="cpu"' in msg and "rbr-fast serve" in msg
    assert loads == []
    gpus(monkeypatch, 1, free=need + MiB)
    assert LazyReward(model=tiny_grader_dir, device="cuda").reward == "R" and loads[-1]["device"] == "cuda"


def test_embedded_default_on_the_default_device(monkeypatch, loads):
    """No model, no device: the embedded grader on CUDA when CUDA is visible (as ``Grader`` picks)."""
    need = 2 * embedded.PARAMS * 2 + GiB  # about 1.5 GiB
    gpus(monkeypatch, 1, free=need - MiB)
    with pytest.raises(PlacementError, match="needs about 1.50 GiB"):
        LazyReward().reward
    gpus(monkeypatch, 1, free=need + MiB)
    assert LazyReward().reward == "R"


def test_nothing_checked_off_cuda(tiny_grader_dir, monkeypatch, loads):
    gpus(monkeypatch, 0)
    assert LazyReward(model=tiny_grader_dir).reward == "R"  # no device, no CUDA: the grader picks the CPU
    assert LazyReward(model=tiny_grader_dir, device="cpu").reward == "R"
    check_placement("http://127.0.0.1:9/v1", "cuda")  # a served grader loads nothing here
    assert len(loads) == 2


def test_trl_adapter_fails_in_one_line(tiny_grader_dir, monkeypatch, loads):
    """The adapter is pickled into a worker without a GPU (TRL's async GRPO worker): its first call
    fails with the placement line, not inside torch."""
    import pickle
    gpus(monkeypatch, 0)
    fn = pickle.loads(pickle.dumps(RBRReward(model=tiny_grader_dir, device="cuda")))
    with pytest.raises(PlacementError, match="sees no GPU"):
        fn(prompts=["Hi"], completions=["Hello"])


def test_serve_reports_one_error_line(tiny_grader_dir, monkeypatch, capsys):
    gpus(monkeypatch, 0)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["serve", "--model", tiny_grader_dir, "--device", "cuda", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rbr-fast serve: error: grader device 'cuda': this process sees no GPU "
                          "(CUDA_VISIBLE_DEVICES=unset)") and "\n" not in err


def test_a_second_grader_on_the_node_is_named(tmp_path, caplog, loads):
    """Another live process holding a grader: the load logs one WARNING naming it and how to share one;
    a dead process's record is removed; this process's record goes at exit."""
    import json
    import subprocess
    import sys
    from rbr_fast.integrations import node_graders
    node = node_graders.folder()
    node.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (node / "grader-dead.json").write_text(json.dumps({"pid": int(dead.stdout), "model": "m", "device": "cpu"}))
    other = subprocess.Popen([sys.executable, "-c", "import sys; from rbr_fast.integrations import node_graders; "
                              "node_graders.register('org/grader', 'cuda:0'); print('ok', flush=True); sys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "ok"
        with caplog.at_level("WARNING", logger="rbr_fast.node"):
            LazyReward(model="embedded", device="cpu").reward
        warned = [r.getMessage() for r in caplog.records if r.name == "rbr_fast.node"]
        assert len(warned) == 1 and f"pid {other.pid} (org/grader, cuda:0)" in warned[0]
        assert "rbr-fast serve" in warned[0] and "\n" not in warned[0]
        assert not (node / "grader-dead.json").exists()
    finally:
        other.communicate("")
    assert node_graders.others() == []  # the other process removed its record at exit
    caplog.clear()
    with caplog.at_level("WARNING", logger="rbr_fast.node"):
        LazyReward(model="embedded", device="cpu", dtype="float32").reward  # alone on the node again
    assert not [r for r in caplog.records if r.name == "rbr_fast.node"]


def test_memory_cap_is_the_need(tiny_grader_dir, monkeypatch, loads):
    """The in-process GPU mode: with ``memory_gib`` the grader needs its cap, whatever its weights; the
    cap reaches the grader's load, from every adapter's options (verl's reward_kwargs and OpenRLHF's
    environment through ``pool.config``, ``rbr-fast serve --memory-gib``)."""
    from rbr_fast.integrations import pool
    gpus(monkeypatch, 1, free=int(1.9 * GiB))
    with pytest.raises(PlacementError) as e:
        LazyReward(model=tiny_grader_dir, device="cuda", memory_gib=2).reward
    assert "the grader needs 2.00 GiB (its memory_gib cap)" in one_line(e) and loads == []
    assert LazyReward(model=tiny_grader_dir, device="cuda", memory_gib=1.5).reward == "R"
    files = weight_bytes(tiny_grader_dir)
    with pytest.raises(PlacementError) as e:  # a cap the weights fill is refused before anything loads
        LazyReward(model=tiny_grader_dir, device="cuda", memory_gib=files / 2 / GiB).reward
    assert "is under the grader's weights" in one_line(e) and len(loads) == 1
    assert loads[-1]["memory_gib"] == 1.5
    monkeypatch.setenv("RBR_FAST_MEMORY_GIB", "1.25")
    assert pool.config()["memory_gib"] == 1.25 and pool.config(memory_gib=3)["memory_gib"] == 3
    with pytest.raises(ValueError, match="memory_gib must be a positive number"):
        pool.check(pool.config(memory_gib=-1))
    from rbr_fast.cli import _parser
    assert _parser()[0].parse_args(["serve", "--memory-gib", "1.5"]).memory_gib == 1.5
    assert _parser()[0].parse_args(["grade", "--data", "rows.jsonl", "--memory-gib", "2"]).memory_gib == 2.0


def test_train_grader_refuses_a_memory_cap(tiny_grader_dir, capsys):
    assert main(["train-grader", "--model", tiny_grader_dir, "--memory-gib", "1"]) == 2
    assert "--memory-gib caps a grader that grades" in capsys.readouterr().err
