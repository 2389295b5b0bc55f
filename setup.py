"""Builds the C++ extension ``rbr_fast._C`` when torch is importable at build time.

Install with ``pip install -e . --no-build-isolation``: the extension links against the torch
that is already installed, so the build must see that torch (build isolation would install a
different one, on Linux a multi-GB CUDA build). Without torch at build time the package still
installs; the extension is then compiled on first use (see ``rbr_fast/ops/cpp_backend.py``).

CUDA sources (``csrc/cuda/*.cu``; none yet, the GPU path is Triton) are added only when a CUDA
toolkit and a CUDA build of torch are present, unless ``RBR_FAST_NO_CUDA=1``.
"""
import glob
import importlib.util
import os

from setuptools import setup


def _cxx_flags():
    """Flags shared with the build-on-first-use path, read from the package without importing it."""
    spec = importlib.util.spec_from_file_location("build_flags", "rbr_fast/ops/build_flags.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.cxx_flags()


ext_modules, cmdclass = [], {}
try:
    import torch
    from torch.utils import cpp_extension
except ImportError:
    torch = None

if torch is not None and os.environ.get("RBR_FAST_NO_EXT") != "1":
    sources = sorted(glob.glob("csrc/*.cpp"))
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
    use_cuda = (bool(cuda_sources) and torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
                and os.environ.get("RBR_FAST_NO_CUDA") != "1")
    args = dict(extra_compile_args={"cxx": _cxx_flags(), "nvcc": ["-O3"]}, extra_link_args=["-fopenmp"])
    if use_cuda:
        ext = cpp_extension.CUDAExtension("rbr_fast._C", sources + cuda_sources, **args)
    else:
        args["extra_compile_args"] = args["extra_compile_args"]["cxx"]
        ext = cpp_extension.CppExtension("rbr_fast._C", sources, **args)
    ext_modules = [ext]
    cmdclass = {"build_ext": cpp_extension.BuildExtension}

setup(ext_modules=ext_modules, cmdclass=cmdclass)
