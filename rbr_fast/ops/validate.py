"""Input checks shared by every public op: one message style, naming the argument.

Checks that need a pass over the data (NaN/inf) are not done here: the kernels report bad values
through a per-row flag word, which ``raise_on_flags`` turns into the op's error. Checks of values
on the device are collected in ``Checks`` and read back with one host sync per call; a CPU kernel
that has summed them up already (flags None, a count as an int) costs no read at all.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _desc(x: torch.Tensor) -> str:
    return f"shape {tuple(x.shape)}, dtype {x.dtype}, device {x.device}"


def tensor(op: str, name: str, x, *, ndim: int, dtypes=FLOAT_DTYPES, what: str = "a float tensor"):
    """Check type, rank and dtype of one tensor argument."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: `{name}` must be a torch.Tensor ({what}), got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{op}: `{name}` must have {ndim} dimensions, got {_desc(x)}")
    if x.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        hint = " (convert with mask.bool())" if dtypes == (torch.bool,) else ""
        raise TypeError(f"{op}: `{name}` must have dtype in ({names}){hint}, got {_desc(x)}")
    return x


def same_layout(op: str, ref_name: str, ref: torch.Tensor, **others: torch.Tensor) -> None:
    """Every tensor in ``others`` must have ``ref``'s leading shape and device."""
    for name, x in others.items():
        want = ref.shape if x.dim() == ref.dim() else ref.shape[: x.dim()]
        if x.shape != want:
            raise ValueError(f"{op}: `{name}` must have shape {tuple(want)} to match `{ref_name}`, got {_desc(x)}")
        if x.device != ref.device:
            raise ValueError(f"{op}: `{name}` is on {x.device} but `{ref_name}` is on {ref.device}; "
                             "move them to one device")


def nonempty(op: str, name: str, x: torch.Tensor) -> None:
    if x.numel() == 0:
        raise ValueError(f"{op}: `{name}` is empty ({_desc(x)}); an empty batch has no advantages to compute")


def finite_tensor(op: str, name: str, x: torch.Tensor) -> None:
    """Full check for small tensors (per-row scores), where a pass costs nothing."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{op}: `{name}` contains NaN or inf ({_desc(x)})")


class Checks:
    """The value checks of one op call, read back from the device together.

    Each check is a 0-d bool tensor (true = bad) and a function that raises the op's error. ``done()``
    costs one device-to-host sync when all pass, so a GPU op stalls its stream once per call at most
    (not once per check or per chunk); only a failing call pays for the detailed message.
    """

    def __init__(self, op: str):
        self.op = op
        self._bad: list[torch.Tensor] = []
        self._fail: list[Callable[[], None]] = []

    def add(self, bad: torch.Tensor | bool, fail: Callable[[], None]) -> None:
        """``bad``: a 0-d bool tensor, or a bool the host knows already (a CPU kernel's summary)."""
        if bad is False:
            return
        self._bad.append(bad if bad is True else bad.reshape(()))
        self._fail.append(fail)

    def flags(self, flags: torch.Tensor | None, bits, note: str = "") -> None:
        """A kernel's per-row flag word (see ``raise_on_flags``); None: the kernel flagged no row."""
        if flags is not None:
            self.add((flags & ((1 << len(bits)) - 1)).any(), lambda: raise_on_flags(self.op, flags, bits, note))

    def done(self) -> None:
        """Raise the first failing check's error, in the order the checks were added."""
        pending = [b for b in self._bad if b is not True]
        if len(pending) == len(self._bad) and (not pending or not bool(torch.stack(pending).any())):
            return
        for bad, fail in zip(self._bad, self._fail):
            if bool(bad):
                fail()


def outputs(op: str, out, like: torch.Tensor, dtype: torch.dtype, inputs: dict[str, torch.Tensor],
            names: tuple[str, ...]) -> None:
    """Caller-owned outputs ``out``: one contiguous tensor per name in ``names`` with ``like``'s shape
    and device and the result's ``dtype``, none sharing memory with each other or an input."""
    if not isinstance(out, (tuple, list)) or len(out) != len(names):
        raise TypeError(f"{op}: `out` must be a tuple of {len(names)} tensors ({', '.join(names)}), got "
                        f"{type(out).__name__}")
    def span(x):  # the bytes a tensor covers (contiguous outputs; inputs are made contiguous)
        return x.data_ptr(), x.data_ptr() + x.numel() * x.element_size()

    seen = {n: span(x) for n, x in inputs.items()}
    for name, o in zip(names, out):
        tensor(op, f"out {name}", o, ndim=like.dim(), dtypes=(dtype,), what="an output tensor")
        if o.shape != like.shape or o.device != like.device or not o.is_contiguous():
            raise ValueError(f"{op}: `out` {name} must be a contiguous tensor of shape {tuple(like.shape)} on "
                             f"{like.device}, got {_desc(o)}{'' if o.is_contiguous() else ', not contiguous'}")
        lo, hi = span(o)
        clash = [n for n, (a, b) in seen.items() if lo < b and a < hi]
        if clash:
            raise ValueError(f"{op}: `out` {name} shares memory with `{clash[0]}`; give separate output tensors")
        seen[f"out {name}"] = (lo, hi)


def number(op: str, name: str, x, *, lo: float | None = None, hi: float | None = None) -> float:
    """A finite Python/0-d number within [lo, hi]."""
    if type(x) is float and (lo is None or x >= lo) and (hi is None or x <= hi) and math.isfinite(x):
        return x  # the common case, before the checks that name what is wrong
    if isinstance(x, torch.Tensor):
        if x.numel() != 1:
            raise TypeError(f"{op}: `{name}` must be a number, got a tensor of {_desc(x)}")
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"{op}: `{name}` must be a number, got {type(x).__name__}")
    x = float(x)
    if not math.isfinite(x) or (lo is not None and x < lo) or (hi is not None and x > hi):
        raise ValueError(f"{op}: `{name}` must be a finite number in [{lo}, {hi}], got {x}")
    return x


def choice(op: str, name: str, x, options) -> str:
    if x not in options:
        raise ValueError(f"{op}: `{name}` must be one of {list(options)}, got {x!r}")
    return x


def linear(op: str, hidden, weight, bias) -> None:
    """``hidden`` [N, H], ``weight`` [V, H] of the same dtype and device, optional ``bias`` [V]."""
    tensor(op, "hidden", hidden, ndim=2)
    tensor(op, "weight", weight, ndim=2)
    nonempty(op, "hidden", hidden)
    if weight.shape[1] != hidden.shape[1]:
        raise ValueError(f"{op}: `weight` must be [V, H] with H = hidden.shape[1] = {hidden.shape[1]}, "
                         f"got shape {tuple(weight.shape)}")
    if weight.device != hidden.device:
        raise ValueError(f"{op}: `weight` is on {weight.device} but `hidden` is on {hidden.device}")
    if weight.dtype != hidden.dtype:
        raise TypeError(f"{op}: `weight` has dtype {weight.dtype} but `hidden` has {hidden.dtype}; cast one")
    if bias is not None:
        tensor(op, "bias", bias, ndim=1)
        if bias.shape[0] != weight.shape[0] or bias.device != weight.device:
            raise ValueError(f"{op}: `bias` must be [V] = [{weight.shape[0]}] on {weight.device}, "
                             f"got shape {tuple(bias.shape)} on {bias.device}")


# what the advantage kernels flag: the mask decides which positions count
NONFINITE_AT_VALID = "NaN or inf at valid (mask=True) positions"


def raise_on_flags(op: str, flags: torch.Tensor, bits, note: str = "") -> None:
    """Raise ``ValueError`` if a kernel flagged a row. ``bits[i] = (argument, what)``: bit i of a row's
    flag word means that argument contains ``what``; bits past ``bits`` are ignored. The message names
    what was flagged in any row, and the first flagged row."""
    flags = flags & ((1 << len(bits)) - 1)
    if not bool(flags.any()):  # the common case: one small reduction, one host sync
        return
    word = 0
    for v in flags.unique().tolist():
        word |= int(v)
    names_by_what: dict[str, list[str]] = {}
    for i, (name, what) in enumerate(bits):
        if word >> i & 1:
            names_by_what.setdefault(what, []).append(f"`{name}`")
    found = "; ".join(f"{', '.join(names)} contain{'s' if len(names) == 1 else ''} {what}"
                      for what, names in names_by_what.items())
    first = int(torch.nonzero(flags).flatten()[0])
    raise ValueError(f"{op}: {found}, first in row {first}{note}")
