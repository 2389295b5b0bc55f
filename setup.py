"""Builds the C++ extension ``rbr_fast._C`` when torch is importable at build time.

Install with ``pip install -e . --no-build-isolation``: the extension links against the torch
that is already installed, so the build must see that torch (build isolation would install a
different one, on Linux a multi-GB CUDA build). Without torch at build time the package still
installs; the extension is then compiled on first use (see ``rbr_fast/ops/extension.py``).

A build with the extension pins torch to the series it was compiled against (``torch==2.13.*``)
in the package's metadata and records the exact version beside the extension
(``rbr_fast/_C_build.json``), which ``rbr_fast.ops.extension`` checks at import. ``csrc/`` is shipped inside
the package as ``rbr_fast/csrc/`` so that an installed wheel can recompile it. ``-march``: see
``rbr_fast/ops/build_flags.py`` (portable by default, ``RBR_FAST_MARCH=native`` for local builds).

CUDA sources (``csrc/cuda/*.cu``; none yet, the GPU path is Triton) are added only when a CUDA
toolkit and a CUDA build of torch are present, unless ``RBR_FAST_NO_CUDA=1``.
"""
import glob
import importlib.util
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

# The runtime dependencies (declared dynamic in pyproject.toml): torch's entry depends on the build.
TORCH_RANGE = "torch>=2.3,<2.15"
DEPENDENCIES = ["numpy>=1.24", "transformers>=4.45", "triton>=3.0; platform_system == 'Linux'", "tqdm>=4.60",
                "httpx>=0.27",  # the served grader (grading.served)
                "pyyaml>=6.0"]


def _build_flags():
    """``rbr_fast/ops/build_flags.py``, loaded without importing the package (which needs torch)."""
    spec = importlib.util.spec_from_file_location("build_flags", "rbr_fast/ops/build_flags.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class BuildPyWithSources(build_py):
    """Also copies ``csrc/`` to ``rbr_fast/csrc/`` in the build, for the compile-on-first-use fallback
    of an installed package (an editable install reads ``csrc/`` in the checkout instead)."""

    def run(self):
        super().run()
        if not self.editable_mode:
            shutil.copytree("csrc", os.path.join(self.build_lib, "rbr_fast", "csrc"), dirs_exist_ok=True)


flags = _build_flags()
ext_modules, cmdclass, torch_requirement = [], {"build_py": BuildPyWithSources}, TORCH_RANGE
try:
    import torch
    from torch.utils import cpp_extension
except ImportError:
    torch = None

if torch is not None and os.environ.get("RBR_FAST_NO_EXT") != "1":
    class BuildExtWithRecord(cpp_extension.BuildExtension):
        """Writes the torch version and flags beside each built extension."""

        def run(self):
            super().run()
            for ext in self.extensions:
                flags.write_record(os.path.join(os.path.dirname(self.get_ext_fullpath(ext.name)), flags.RECORD),
                                   torch.__version__)

    sources = sorted(glob.glob("csrc/*.cpp"))
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
    use_cuda = (bool(cuda_sources) and torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
                and os.environ.get("RBR_FAST_NO_CUDA") != "1")
    args = dict(extra_compile_args={"cxx": flags.cxx_flags(), "nvcc": ["-O3"]}, extra_link_args=["-fopenmp"])
    if use_cuda:
        ext = cpp_extension.CUDAExtension("rbr_fast._C", sources + cuda_sources, **args)
    else:
        args["extra_compile_args"] = args["extra_compile_args"]["cxx"]
        ext = cpp_extension.CppExtension("rbr_fast._C", sources, **args)
    ext_modules = [ext]
    cmdclass["build_ext"] = BuildExtWithRecord
    torch_requirement = f"torch=={flags.torch_series(torch.__version__)}.*"

setup(ext_modules=ext_modules, cmdclass=cmdclass, install_requires=[torch_requirement] + DEPENDENCIES)
