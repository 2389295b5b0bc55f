"""Compile every Triton kernel the ops launch for NVIDIA GPUs, ahead of time and without one.

Each op's Triton launcher is called on CPU tensors of real model shapes (Llama/Qwen vocabularies,
long responses) with the kernel launch intercepted: what would have been launched (argument types,
constexprs, ``num_warps``) is compiled with Triton's own compiler for each target architecture, and
the cubin's resource use is read with the ``cuobjdump`` Triton ships. No kernel runs, so no GPU is
needed; with ``TRITON_INTERPRET=1`` the kernels are interpreter objects and cannot be compiled.
"""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch

# real shapes: Llama-3 and Qwen2 vocabularies, a long response, a batch of graded answers
VOCABS = (128256, 151936)
RESPONSE_TOKENS = 32768
_TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.int32: "i32",
          torch.int64: "i64", torch.uint8: "u8", torch.int8: "i8", torch.bool: "i1"}


@dataclass(frozen=True)
class Launch:
    """One kernel as it would be launched: its argument types and compile-time constants."""
    kernel: object  # triton JITFunction
    signature: tuple[tuple[str, str], ...]  # (argument, Triton type), constexprs typed "constexpr"
    constexprs: tuple[tuple[str, object], ...]
    num_warps: Optional[int]

    @property
    def name(self) -> str:
        return self.kernel.__name__

    def label(self) -> str:
        """The kernel with the constants and pointer dtypes that tell its variants apart."""
        consts = ",".join(f"{k}={v}" for k, v in self.constexprs)
        dtypes = sorted({t[1:] for _, t in self.signature if t.startswith("*") and t[1:] in ("fp32", "bf16", "fp16")})
        return f"{self.name}[{consts}]({'/'.join(dtypes)})"


@dataclass
class Compiled:
    launch: Launch
    arch: int
    registers: int = 0
    spill_bytes: int = 0  # local memory per thread (register spills, stack)
    shared_bytes: int = 0
    ptx_kib: float = 0.0
    sass_kib: float = 0.0
    error: str = ""


def _type(value) -> str:
    if isinstance(value, torch.Tensor):
        return "*" + _TYPES[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -2**31 <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"cannot type a kernel argument of type {type(value).__name__}")


@contextlib.contextmanager
def capture() -> Iterator[list[Launch]]:
    """Within the block, ``kernel[grid](...)`` records a ``Launch`` instead of running."""
    from triton.runtime.jit import JITFunction
    launches: list[Launch] = []
    original = JITFunction.run

    def record(self, *args, grid, warmup, **kwargs):
        num_warps = kwargs.pop("num_warps", None)
        values = dict(zip(self.arg_names, args), **kwargs)
        sig = tuple((p.name, "constexpr" if p.is_constexpr else _type(values[p.name])) for p in self.params)
        consts = tuple((p.name, values[p.name]) for p in self.params if p.is_constexpr)
        launches.append(Launch(self, sig, consts, num_warps))

    JITFunction.run = record
    try:
        yield launches
    finally:
        JITFunction.run = original


def _calls() -> list[Callable[[], object]]:
    """Each op's Triton launchers on inputs of real shapes (CPU tensors: nothing runs)."""
    from .advantages import triton as adv
    from .logprobs import triton as lp
    from .reward import triton as rw
    calls = []
    for dtype in (torch.float32, torch.bfloat16):
        B, T = 2, RESPONSE_TOKENS
        x = torch.zeros(B, T, dtype=dtype)
        mask = torch.ones(B, T, dtype=torch.bool)
        scores = torch.zeros(B)
        calls.append(lambda x=x, m=mask: adv.gae(x, x, m, 1.0, 0.95))
        calls.append(lambda x=x, m=mask: adv.masked_whiten(x, m, True, 1e-8))
        for est in ("k1", "k2", "k3"):
            calls.append(lambda x=x, m=mask, s=scores, e=est: adv.shape_rewards(s, x, x, m, 0.05, e))
            calls.append(lambda x=x, m=mask, s=scores, e=est: adv.ppo_advantages(s, x, x, x, m, 0.05, e, 1.0, 0.95,
                                                                                 True, 1e-8))
        for V in VOCABS:
            logits = torch.zeros(2, V, dtype=dtype)
            labels = torch.zeros(2, dtype=torch.int64)
            ids = torch.tensor([0, 1, 2])
            stats = torch.zeros(2)
            calls.append(lambda z=logits, i=ids: lp.yes_no_lse(z, i, i[:2]))
            calls.append(lambda z=logits, y=labels: lp.label_logprobs(z, y, 1.0, -100))
            calls.append(lambda z=logits, y=labels, s=stats: lp.label_logprobs_backward(s, z, y, s, 1.0, -100))
    props = torch.zeros(64, 23)
    conj = torch.zeros(12, 4, dtype=torch.int32)
    calls.append(lambda: rw.rbr_reward(props, conj, conj.bool(), torch.zeros(3, 35), torch.zeros(64, dtype=torch.int64),
                                       torch.zeros(3)))
    return calls


def launches() -> list[Launch]:
    """Every distinct kernel launch of the ops at the shapes above."""
    found: dict[tuple, Launch] = {}
    with capture() as seen:
        for call in _calls():
            call()
    for launch in seen:
        found.setdefault((launch.name, launch.signature, launch.constexprs, launch.num_warps), launch)
    return list(found.values())


def _tool(name: str) -> str:
    import triton
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def _resources(cubin: bytes, kernel: str) -> dict[str, int]:
    """REG, LOCAL, STACK and SHARED of ``kernel`` in a cubin, from ``cuobjdump --dump-resource-usage``."""
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        out = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", f.name], capture_output=True, text=True,
                             check=True).stdout
    finally:
        os.unlink(f.name)
    block = out[out.index(f"Function {kernel}"):]
    return {k: int(v) for k, v in re.findall(r"\b(REG|LOCAL|STACK|SHARED):(\d+)", block.splitlines()[1])}


def compile_launch(launch: Launch, arch: int) -> Compiled:
    """Compile one launch for ``sm_<arch>``; a compile error is recorded, not raised."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    result = Compiled(launch, arch)
    try:
        src = ASTSource(launch.kernel, dict(launch.signature), constexprs=dict(launch.constexprs))
        options = {"num_warps": launch.num_warps} if launch.num_warps else {}
        kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
        res = _resources(kernel.asm["cubin"], launch.name)
    except Exception as e:  # any compiler failure is the finding itself
        result.error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"[:300]
        return result
    result.registers = res.get("REG", 0)
    result.spill_bytes = res.get("LOCAL", 0) + res.get("STACK", 0)
    result.shared_bytes = max(res.get("SHARED", 0), int(kernel.metadata.shared))
    result.ptx_kib = len(kernel.asm["ptx"]) / 1024
    result.sass_kib = len(kernel.asm["cubin"]) / 1024
    return result


def check(archs: tuple[int, ...] = (80, 90), progress: Callable[[str], None] = lambda _: None) -> list[Compiled]:
    """Compile every launch for every architecture in ``archs``."""
    out = []
    for launch in launches():
        for arch in archs:
            progress(f"sm_{arch} {launch.label()}")
            out.append(compile_launch(launch, arch))
    return out


def table(results: list[Compiled]) -> str:
    lines = [f"{'kernel':72s} {'arch':>5s} {'regs':>5s} {'spill B':>7s} {'smem B':>7s} {'PTX KiB':>8s} "
             f"{'cubin KiB':>9s}"]
    for r in results:
        if r.error:
            lines.append(f"{r.launch.label():72s} sm_{r.arch} FAILED: {r.error}")
        else:
            lines.append(f"{r.launch.label():72s} sm_{r.arch} {r.registers:5d} {r.spill_bytes:7d} {r.shared_bytes:7d} "
                         f"{r.ptx_kib:8.1f} {r.sass_kib:9.1f}")
    return "\n".join(lines)
