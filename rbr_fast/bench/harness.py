"""Benchmark machinery: the case registry, timing, copy-bandwidth floor, agreement checks and reports.

A ``Case`` names one op configuration: how to build seeded random inputs for a size, our function,
the peers to compare against and the bytes the op moves. ``run`` times every selected case and size
in this process on the same inputs, refuses to time a peer whose output disagrees with ours, and
writes a table, a CSV (appended) and one PNG per case.
"""
from __future__ import annotations

import csv
import datetime
import gc
import importlib.metadata
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from rbr_fast.alloc import malloc_trim, tune_malloc
from rbr_fast.io import pyplot

Size = tuple[int, int]  # (B, T)
Inputs = dict[str, Any]  # tensors and scalar hyper-parameters; tensors of shape [B, T] carry a "mask"


class Skip(Exception):
    """A peer that cannot run here (not installed, compile over budget); the message goes in the notes."""


@dataclass
class Options:
    device: torch.device
    quick: bool = False
    target_s: float = 0.5  # timed wall time per (case, size, impl); the rep count follows from it
    min_reps: int = 5
    compile_budget_s: float = 120.0  # torch.compile peers that take longer are abandoned (0: skip them)
    dram_mib: int = 512
    out: Path = Path(".")
    # glibc keeps freed multi-MiB blocks (see rbr_fast.alloc); False times CPU ops as a plain caller
    # sees them, paying page faults on every fresh output
    tune_malloc: bool = True


@dataclass
class Peer:
    """An implementation we compare against.

    ``fn(inputs)`` returns a tensor or a tuple of tensors; ``outputs`` lists which of our outputs those
    reproduce, in order (None: all of ours). ``same_output`` False: another method for the same job
    (e.g. trained heads against asking questions), timed without an agreement check, which ``note``
    must say. Subclasses override ``setup`` to compile or to skip.
    """
    fn: Callable[[Inputs], Any]
    outputs: Optional[tuple[int, ...]] = None
    note: str = ""
    same_output: bool = True

    def setup(self, inputs: Inputs, opts: Options) -> tuple[Callable[[Inputs], Any], Optional[float]]:
        """(callable to time, compile seconds or None); raises ``Skip`` when the peer cannot run."""
        return self.fn, None


@dataclass
class Case:
    """One benchmarked op configuration; ``name`` labels rows, ``op`` is the public op (for --ops)."""
    name: str
    op: str
    build: Callable[[Size, torch.device], Inputs]  # seeded, never all-zero inputs
    ours: Callable[[Inputs], Any]
    peers: dict[str, Peer]
    nbytes: Callable[[Inputs], int]  # bytes read + written, each once
    sizes: list[Size]
    quick_sizes: list[Size]
    default_size: Size  # the size the pytest-benchmark tests use
    gpu_sizes: list[Size] = field(default_factory=list)  # added on CUDA: sizes above a GPU's L2
    tol: float = 1e-4  # max |ours - peer| over valid positions, relative to max(1, max |ours|)
    # seconds of the physical floor when it is not bytes / copy bandwidth (e.g. a matmul-bound op:
    # the bare matmul measured in the same run); called once per size
    floor_s: Optional[Callable[[Inputs, "Options"], float]] = None
    memory: bool = False  # also record each implementation's peak memory over one call
    size_label: str = "B*T elements"
    warmup: int = 2  # untimed calls before timing (0 for calls of seconds: agreement check warms up)
    describe: Optional[Callable[[Inputs], str]] = None  # facts about the inputs for our row's note


@dataclass
class Target:
    """A goal checked at the end. ``peer`` None: floor time / our time >= ``minimum``;
    otherwise peer time / our time >= ``minimum``."""
    case: str
    size: Size
    peer: Optional[str]
    minimum: float
    text: str
    metric: str = "time"  # or "memory": peer peak memory / ours
    max_seconds: Optional[float] = None  # instead: our median time must be at most this


CASES: dict[str, Case] = {}
TARGETS: list[Target] = []


def register(case: Case, *targets: Target) -> Case:
    CASES[case.name] = case
    TARGETS.extend(targets)
    return case


def size_str(size: Size) -> str:
    return f"{size[0]}x{size[1]}"


def parse_size(text: str) -> Size:
    b, t = text.lower().split("x")
    return int(b), int(t)


# ---------------------------------------------------------------------------------------------- timing

@dataclass
class Timing:
    median_s: float
    min_s: float
    reps: int


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_l2_flush: dict[torch.device, torch.Tensor] = {}


def _flush_l2(device: torch.device) -> None:
    """Overwrite twice the GPU's L2 so a rep does not read what the last one left there."""
    if device not in _l2_flush:
        l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 64 << 20)
        _l2_flush[device] = torch.empty(2 * l2, dtype=torch.uint8, device=device)
    _l2_flush[device].zero_()


def _time_once(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":  # events time the kernels, not the launch
        _flush_l2(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(fn: Callable[[], Any], device: torch.device, target_s: float, min_reps: int = 5,
            warmup: int = 2) -> Timing:
    """Median of single-call times after a warm-up (caches, allocator, lazy init); GC is paused so
    a collection does not land inside one run."""
    _sync(device)
    gc.collect()
    gc.disable()
    try:
        warm = [_time_once(fn, device) for _ in range(warmup)]
        if not warm:  # calls of several seconds: time them as they come
            return _timings([_time_once(fn, device) for _ in range(min_reps)])
        while sum(warm) < 0.2 * target_s and len(warm) < 50:
            warm.append(_time_once(fn, device))
        per_call = max(statistics.median(warm[1:] or warm), 1e-7)
        reps = max(min_reps, min(10_000, int(target_s / per_call)))
        return _timings([_time_once(fn, device) for _ in range(reps)])
    finally:
        gc.enable()


def _timings(times: list[float]) -> Timing:
    return Timing(statistics.median(times), min(times), len(times))


_copy_cache: dict[tuple[str, int], float] = {}


def copy_bandwidth(nbytes: int, opts: Options, reps: int = 0) -> float:
    """Bytes/s of ``dst.copy_(src)`` whose working set (src + dst) is ``nbytes``, counting read + write.

    Matching the working set, not the buffer size, keeps the floor honest: an op whose data fits
    in cache is held to cache bandwidth, one that spills to DRAM to DRAM bandwidth."""
    half = max(nbytes // 2, 1)
    key = (str(opts.device), half)
    if key not in _copy_cache:
        src = torch.empty(half, dtype=torch.uint8, device=opts.device).fill_(1)
        dst = torch.empty_like(src).fill_(2)  # touch the pages before timing
        t = measure(lambda: dst.copy_(src), opts.device, opts.target_s, reps or opts.min_reps)
        _copy_cache[key] = 2 * half / t.median_s
    return _copy_cache[key]


# ------------------------------------------------------------------------------------------- agreement

def as_tuple(out: Any) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def max_error(ours: tuple[torch.Tensor, ...], theirs: tuple[torch.Tensor, ...], mask: Optional[torch.Tensor],
              which: Optional[tuple[int, ...]] = None) -> float:
    """Largest |ours - theirs| over valid positions ([B, T] outputs) or all elements (others),
    relative to max(1, max |ours|); inf on a shape mismatch or a non-finite value."""
    ours = tuple(ours[i] for i in which) if which is not None else ours
    if len(ours) != len(theirs):
        return math.inf
    worst = 0.0
    for a, b in zip(ours, theirs):
        if a.shape != b.shape:
            return math.inf
        if mask is not None and a.shape == mask.shape:
            a, b = a[mask], b[mask]
        a, b = a.double(), b.double()
        if not bool(torch.isfinite(b).all()):
            return math.inf
        scale = max(1.0, float(a.abs().max())) if a.numel() else 1.0
        worst = max(worst, float((a - b).abs().max()) / scale if a.numel() else 0.0)
    return worst


def check_peer(case: Case, peer: Peer, inputs: Inputs, ours_out: Any, peer_out: Any) -> float:
    """The peer's error against ours (nan for a peer with another output by design); raises
    AssertionError when it exceeds the case tolerance."""
    if not peer.same_output:
        return math.nan
    err = max_error(as_tuple(ours_out), as_tuple(peer_out), inputs.get("mask"), peer.outputs)
    if not err <= case.tol:
        raise AssertionError(f"{case.name}: peer output differs from ours (max rel. error {err:.3g} > {case.tol:g})")
    return err


# ------------------------------------------------------------------------------------------ environment

def _git_commit() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "none"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "none"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment(device: torch.device) -> dict[str, str]:
    """Facts stamped on every CSV row and printed in the header."""
    from rbr_fast.ops import backend_name
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model()
    return {"timestamp": datetime.datetime.now().isoformat(timespec="seconds"), "git_commit": _git_commit(),
            "device": f"{device.type}: {name}", "torch": torch.__version__, "triton": _version("triton"),
            "python": platform.python_version(), "threads": str(torch.get_num_threads()),
            "backend": backend_name(device)}


def gpu_telemetry(device: torch.device) -> dict[str, Any]:
    """SM/memory clocks and memory used from NVML, when on CUDA and nvidia-ml-py is installed."""
    if device.type != "cuda":
        return {}
    try:
        import pynvml
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
        uuid = getattr(torch.cuda.get_device_properties(device), "uuid", None)
        handle = (pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}") if uuid is not None
                  else pynvml.nvmlDeviceGetHandleByIndex(device.index or 0))
        return {"gpu_sm_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
                "gpu_mem_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM),
                "gpu_mem_used_mib": pynvml.nvmlDeviceGetMemoryInfo(handle).used // 2**20}
    except pynvml.NVMLError as e:  # telemetry is best effort; never fail a benchmark over it
        return {"gpu_telemetry_error": str(e)}


# ------------------------------------------------------------------------------------------------- run

@dataclass
class Row:
    case: str
    size: str
    impl: str
    status: str  # ok | skipped | MISMATCH | error
    median_ms: float = math.nan
    min_ms: float = math.nan
    reps: int = 0
    ratio: float = math.nan  # impl time / our time: > 1 means we are faster
    gbps: float = math.nan
    floor_ms: float = math.nan
    pct_floor: float = math.nan  # floor time / impl time * 100
    copy_gbps: float = math.nan
    compile_s: float = math.nan
    max_err: float = math.nan
    peak_mib: float = math.nan  # peak memory of one call above what was allocated before it
    note: str = ""
    telemetry: dict = field(default_factory=dict)


def _timed_row(case: Case, size: Size, impl: str, fn: Callable[[], Any], nbytes: int, copy_gbps: float,
               floor_ms: float, opts: Options, ours_ms: float = math.nan) -> Row:
    peak = peak_memory_mib(fn, opts.device, opts.tune_malloc) if case.memory else math.nan
    t = measure(fn, opts.device, opts.target_s, opts.min_reps, case.warmup)
    ms = t.median_s * 1e3
    return Row(case.name, size_str(size), impl, "ok", ms, t.min_s * 1e3, t.reps,
               1.0 if math.isnan(ours_ms) else ms / ours_ms, nbytes / t.median_s / 1e9, floor_ms,
               100 * floor_ms / ms, copy_gbps, peak_mib=peak, telemetry=gpu_telemetry(opts.device))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory_mib(fn: Callable[[], Any], device: torch.device, tuned: bool = True) -> float:
    """Peak memory one call of ``fn`` adds on top of what is live before it (its output included).

    CUDA: the caching allocator's peak. CPU: resident-set size sampled every 0.2 ms by a thread
    (CPU tensors have no allocator statistics). For the measurement glibc is put back to mapping
    every block over 64 KiB on its own and unmapping it on free, so resident size follows the live
    tensors; afterwards ``tune_malloc`` is applied again (``tuned``), or glibc's static default
    thresholds (128 KiB) are set."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = fn()
        torch.cuda.synchronize(device)
        del out
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    import threading
    gc.collect()
    tune_malloc(64 << 10)
    malloc_trim()
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.0002)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        out = fn()
        peak[0] = max(peak[0], _rss_bytes())
    finally:
        done.set()
        th.join()
        tune_malloc(1 << 30 if tuned else 128 << 10)
    del out
    return (peak[0] - base) / 2**20


def tensor_peak_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak bytes of the tensors one call of ``fn`` holds over what is live before it: the CUDA
    allocator's peak (``peak_memory_mib``), or on CPU the torch profiler's memory timeline, which counts
    every tensor allocation exactly (``peak_memory_mib``'s resident-set sampling can miss a short peak),
    at many times the call's run time."""
    if device.type == "cuda":
        return int(peak_memory_mib(fn, device) * 2**20)
    import json
    import tempfile
    import warnings
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # export_memory_timeline is deprecated, with no CPU successor
        path = os.path.join(tmp, "timeline.raw.json")
        prof.export_memory_timeline(path, device="cpu")
        with open(path) as f:
            totals = [sum(s) for s in json.load(f)[1]]
    return max(totals) - min(totals)


def _say(msg: str) -> None:
    print(msg, flush=True)


def run_case(case: Case, size: Size, opts: Options, ours_name: str) -> list[Row]:
    """Our op and every peer on one set of inputs: check agreement, then time."""
    tag = f"[{case.name} {size_str(size)}]"
    try:
        inputs = case.build(size, opts.device)
    except Skip as e:  # e.g. a model that is not installed
        _say(f"{tag} skipped: {e}")
        return [Row(case.name, size_str(size), ours_name, "skipped", note=str(e))]
    nbytes = case.nbytes(inputs)
    copy_gbps = copy_bandwidth(nbytes, opts) / 1e9
    floor_ms = (case.floor_s(inputs, opts) if case.floor_s else nbytes / (copy_gbps * 1e9)) * 1e3
    try:
        ours_out = case.ours(inputs)
        ours = _timed_row(case, size, ours_name, lambda: case.ours(inputs), nbytes, copy_gbps, floor_ms, opts)
    except Exception as e:  # nothing to compare against; record it and move on
        _say(f"{tag} !! {ours_name} FAILED: {type(e).__name__}: {e}")
        return [Row(case.name, size_str(size), ours_name, "error", note=f"{type(e).__name__}: {e}")]
    if case.describe:
        ours.note = case.describe(inputs)
    _say(f"{tag} {ours_name}: {ours.median_ms:.3f} ms ({ours.pct_floor:.0f}% of floor) {ours.note}")
    rows = [ours]
    for name, peer in case.peers.items():
        try:
            fn, compile_s = peer.setup(inputs, opts)
            peer_out = fn(inputs)
            err = max_error(as_tuple(ours_out), as_tuple(peer_out), inputs.get("mask"), peer.outputs) \
                if peer.same_output else math.nan
            if peer.same_output and not err <= case.tol:
                _say(f"{tag} !!!!! MISMATCH: {name} disagrees with ours (max rel. error {err:.3g} > tol "
                     f"{case.tol:g}); not timed")
                rows.append(Row(case.name, size_str(size), name, "MISMATCH", max_err=err, note="output differs"))
                continue
            row = _timed_row(case, size, name, lambda: fn(inputs), nbytes, copy_gbps, floor_ms, opts, ours.median_ms)
        except Skip as e:
            _say(f"{tag} {name}: skipped ({e})")
            rows.append(Row(case.name, size_str(size), name, "skipped", note=str(e)))
            continue
        except Exception as e:  # a broken peer should not end the run
            _say(f"{tag} !! {name} FAILED: {type(e).__name__}: {e}")
            rows.append(Row(case.name, size_str(size), name, "error", note=f"{type(e).__name__}: {e}"))
            continue
        row.max_err = err
        row.compile_s = math.nan if compile_s is None else compile_s
        row.note = "; ".join(x for x in (peer.note, f"compile {compile_s:.1f} s" if compile_s else "") if x)
        _say(f"{tag} {name}: {row.median_ms:.3f} ms (x{row.ratio:.2f} vs ours)")
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------ report

def _fmt(x: float, spec: str) -> str:
    return "-" if math.isnan(x) else format(x, spec)


def table(rows: list[Row]) -> str:
    head = ("case", "size", "impl", "median ms", "ratio", "GB/s", "% floor", "peak MiB", "notes")
    body = [(r.case, r.size, r.impl, _fmt(r.median_ms, ".3f"), _fmt(r.ratio, ".2f"), _fmt(r.gbps, ".3g"),
             _fmt(r.pct_floor, ".3g"), _fmt(r.peak_mib, ".0f"),
             r.note if r.status == "ok" else f"{r.status}: {r.note}") for r in rows]
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head) - 1)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 3 else f"{{:>{w}}}" for i, w in enumerate(widths)) + "  {}"
    return "\n".join(fmt.format(*x) for x in [head, *body])


def evaluate_targets(rows: list[Row], selected: set[str], ours_name: str) -> list[str]:
    """One line per target of a selected case: PASS/FAIL with the measured value, or why unmeasured."""
    get = {(r.case, r.size, r.impl): r for r in rows}.get
    out = []
    for t in (t for t in TARGETS if t.case in selected):
        ours = get((t.case, size_str(t.size), ours_name))
        if ours is None or ours.status != "ok":
            out.append(f"  n/a   {t.text}: {t.case} {size_str(t.size)} not measured in this run")
            continue
        if t.max_seconds is not None:
            sec = ours.median_ms / 1e3
            out.append(f"  {'PASS' if sec <= t.max_seconds else 'FAIL'}  {t.text}: {sec:.2f} s")
            continue
        if t.peer is None:
            value = ours.pct_floor / 100
        else:
            peer = get((t.case, size_str(t.size), t.peer))
            if peer is None or peer.status != "ok":
                out.append(f"  n/a   {t.text}: {t.peer} {'not run' if peer is None else peer.status}")
                continue
            value = peer.ratio if t.metric == "time" else peer.peak_mib / max(ours.peak_mib, 1e-9)
        out.append(f"  {'PASS' if value >= t.minimum else 'FAIL'}  {t.text}: {value:.2f}x (need >= {t.minimum:g}x)")
    return out


def append_csv(rows: list[Row], env: dict[str, str], path: Path) -> None:
    """Append every row, stamped with the environment; writes the header when the file is new."""
    fields = list(env) + [k for k in asdict(rows[0]) if k != "telemetry"] + ["telemetry"]
    if path.exists():
        with path.open(newline="") as f:
            old = next(csv.reader(f), [])
        if old != fields:  # columns changed since that file was started: keep it, start a new one
            path.rename(path.with_name(f"{path.stem}.{int(time.time())}{path.suffix}"))
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        if new:
            w.writeheader()
        for r in rows:
            d = asdict(r)
            d["telemetry"] = ";".join(f"{k}={v}" for k, v in d["telemetry"].items())
            w.writerow({**env, **d})


def plot(rows: list[Row], out_dir: Path) -> list[Path]:
    """One log-log PNG per case: median time against B*T, a line per implementation."""
    plt = pyplot()
    if plt is None:
        _say("note: matplotlib is not installed; no plots written")
        return []
    paths = []
    for case in dict.fromkeys(r.case for r in rows):
        ok = [r for r in rows if r.case == case and r.status == "ok"]
        if not ok:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for impl in dict.fromkeys(r.impl for r in ok):
            pts = sorted((math.prod(parse_size(r.size)), r.median_ms) for r in ok if r.impl == impl)
            ax.plot(*zip(*pts), marker="o", label=impl)
        ax.set(xscale="log", yscale="log", xlabel=CASES[case].size_label if case in CASES else "elements",
               ylabel="median ms", title=case)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"{case.replace('+', '_')}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def run(cases: list[Case], sizes: Optional[list[Size]], opts: Options) -> int:
    """Benchmark ``cases`` (at ``sizes``, or each case's own), report, and return an exit status:
    1 when our op failed or a peer disagreed with it."""
    # every implementation gets the same allocator: without this, glibc page-faults in each
    # fresh multi-MiB output again and that, not the op, dominates CPU timings
    env = environment(opts.device)
    env["tune_malloc"] = str(tune_malloc() if opts.tune_malloc else False)
    for k in ("device", "torch", "triton", "python", "threads", "backend", "git_commit", "tune_malloc"):
        _say(f"# {k}: {env[k]}")
    for k, val in gpu_telemetry(opts.device).items():
        _say(f"# {k}: {val}")
    dram = copy_bandwidth(opts.dram_mib * 2**21, opts, reps=3) / 1e9  # src = dram_mib, dst = dram_mib
    _say(f"# DRAM copy bandwidth ({opts.dram_mib} MiB -> {opts.dram_mib} MiB, read+write): {dram:.1f} GB/s")
    env["dram_copy_gbps"] = f"{dram:.2f}"
    ours_name = f"rbr_fast[{env['backend']}]"
    rows: list[Row] = []
    for case in cases:
        own = case.quick_sizes if opts.quick else case.sizes + (case.gpu_sizes if opts.device.type == "cuda" else [])
        for size in sizes or own:
            rows.extend(run_case(case, size, opts, ours_name))
    _say("\n" + table(rows))
    _say("floor = op bytes (read + written once) / torch copy bandwidth at the same working set, or the "
         "bare matmul for fused-linear ops; "
         "ratio = impl time / our time (> 1: we are faster)")
    compiles = [f"  {r.case} {r.size} {r.impl}: " + (f"{r.compile_s:.1f} s" if r.status == "ok" else r.note)
                for r in rows if not math.isnan(r.compile_s) or "compile" in r.note]
    if compiles:
        _say("\ncompile times (trace + codegen + build + first run, not in the timings):\n" + "\n".join(compiles))
    _say("\ntargets:\n" + "\n".join(evaluate_targets(rows, {c.name for c in cases}, ours_name) or ["  (none for these cases)"]))
    out_dir = opts.out / "bench_results"
    out_dir.mkdir(parents=True, exist_ok=True)
    append_csv(rows, env, out_dir / "results.csv")
    written = [out_dir / "results.csv", *plot(rows, out_dir)]
    _say("\nwrote " + ", ".join(str(p) for p in written))
    bad = [r for r in rows if r.status == "MISMATCH" or (r.status == "error" and r.impl == ours_name)]
    if bad:
        print(f"!! {len(bad)} row(s) failed: " + ", ".join(f"{r.case} {r.size} {r.impl} {r.status}" for r in bad),
              file=sys.stderr)
    return 1 if bad else 0
