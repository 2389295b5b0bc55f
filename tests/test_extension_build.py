"""How the C++ extension is built (-march, the torch record) and what the backend does with a build
made for another torch: recompile from the sources with one warning, else fall back to the reference.
The real thing, from an installed wheel, is checked by ``.ci/install_check.sh``."""
import importlib.util
import json
import re
import warnings

import pytest
import torch

import rbr_fast
from rbr_fast.ops import build_flags, dispatch, extension
from rbr_fast.ops.advantages import reference


@pytest.mark.parametrize("machine,env,march", [
    ("x86_64", None, "-march=x86-64-v3"), ("aarch64", None, None), ("x86_64", "native", "-march=native"),
    ("x86_64", "none", None), ("x86_64", "skylake", "-march=skylake"),
])
def test_march_is_portable_unless_asked(monkeypatch, machine, env, march):
    monkeypatch.setattr(build_flags.platform, "machine", lambda: machine)
    if env is None:
        monkeypatch.delenv(build_flags.ENV, raising=False)
    else:
        monkeypatch.setenv(build_flags.ENV, env)
    flags = build_flags.cxx_flags()
    assert [f for f in flags if f.startswith("-march")] == ([march] if march else [])
    assert flags[:2] == ["-O3", "-fopenmp"]


def test_torch_series():
    assert build_flags.torch_series("2.13.0+cpu") == "2.13"
    assert build_flags.torch_series("2.14.1") == "2.14"


def test_record_round_trip(tmp_path):
    build_flags.write_record(tmp_path / "r.json", "2.13.0+cpu")
    assert build_flags.read_record(tmp_path / "r.json") == {"torch": "2.13.0+cpu", "cxx_flags": build_flags.cxx_flags()}
    assert build_flags.read_record(tmp_path / "missing.json") is None


@pytest.fixture
def fresh_load(monkeypatch, tmp_path):
    """The backend's loader from scratch, with a recorded torch that is not this one."""
    extension._load.cache_clear()
    record = tmp_path / build_flags.RECORD
    record.write_text(json.dumps({"torch": "2.0.0", "cxx_flags": []}))
    monkeypatch.setattr(extension, "RECORD", record)
    yield record
    extension._load.cache_clear()


def test_mismatch_recompiles_from_the_sources(monkeypatch, tmp_path, fresh_load):
    packaged, checkout = tmp_path / "pkg_csrc", tmp_path / "csrc"
    for folder in (packaged, checkout):
        folder.mkdir()
        (folder / "module.cpp").write_text("")
    monkeypatch.setattr(extension, "SOURCE_DIRS", (packaged, checkout))
    compiled = []
    monkeypatch.setattr(extension, "_compile", lambda srcs: compiled.append(srcs) or extension)
    expected = f"built against torch 2.0.0 but torch {torch.__version__} is installed; compiling it from {packaged}"
    with pytest.warns(RuntimeWarning, match=re.escape(expected)) as caught:
        assert extension.available()
    assert len(caught) == 1
    assert compiled == [[str(packaged / "module.cpp")]]  # the packaged sources first


def test_a_failed_recompile_falls_back_to_the_reference(monkeypatch, fresh_load):
    def fail(srcs):
        raise RuntimeError("no compiler")
    monkeypatch.setattr(extension, "_compile", fail)
    monkeypatch.delenv("RBR_FAST_BACKEND", raising=False)
    r, v = torch.randn(2, 9), torch.randn(2, 9)
    mask = torch.ones(2, 9, dtype=torch.bool)
    with pytest.warns(RuntimeWarning) as caught:
        out = rbr_fast.gae(r, v, mask)
    recompiling, fallback = (str(w.message) for w in caught)
    assert "rbr_fast._C was built against torch 2.0.0" in recompiling and "compiling it from" in recompiling
    assert "falling back to the PyTorch reference backend" in fallback
    assert "compiling it failed (RuntimeError: no compiler)" in fallback
    torch.testing.assert_close(out.advantages, reference.gae(r, v, mask, 1.0, 0.95)[0])
    monkeypatch.setenv("RBR_FAST_BACKEND", "cpp")
    with pytest.raises(RuntimeError, match="RBR_FAST_BACKEND=cpp cannot run: .*pip install ninja"):
        dispatch.backend_name("cpu")


@pytest.mark.skipif(importlib.util.find_spec("rbr_fast._C") is None, reason="the extension is not built")
def test_a_matching_record_uses_the_prebuilt_extension(fresh_load):
    build_flags.write_record(fresh_load, torch.__version__)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert extension.available()
    assert extension.loaded_from() == rbr_fast._C.__file__
