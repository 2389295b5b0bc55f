"""Per-step metrics: a jsonl log (truncated to the resumed step on resume), optional TensorBoard,
and a PNG of the curves at the end. Only process 0 writes."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ..io import atomic_write_text, dumps, pyplot

CURVES = ("reward_mean", "rbr", "kl", "entropy", "clip_frac", "approx_kl", "value_explained_var", "tokens_per_s")


class RunLog:
    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool = False, resume_step: Optional[int] = None):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.enabled = enabled
        self.rows: list[dict] = []
        self.tb = None
        if not enabled:
            return
        if resume_step is not None and self.path.is_file():  # drop steps the checkpoint does not contain
            self.rows = [r for r in map(json.loads, self.path.read_text().splitlines()) if r["step"] <= resume_step]
            atomic_write_text(self.path, "".join(dumps(r) + "\n" for r in self.rows))
        elif self.path.exists():
            self.path.unlink()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise RuntimeError("tensorboard=true needs the tensorboard package: pip install tensorboard") from e
            self.tb = SummaryWriter(str(Path(out_dir) / "tensorboard"))

    def log(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        row = {"step": step, **metrics}
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(dumps(row) + "\n")
            f.flush()
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)

    def plot(self, path: Path) -> Optional[Path]:
        """The main curves against the step, one panel each; None without matplotlib or rows."""
        plt = pyplot()
        if not self.enabled or plt is None or not self.rows:
            return None
        keys = [k for k in CURVES if any(k in r for r in self.rows)]
        fig, axes = plt.subplots(len(keys), 1, figsize=(6, 1.8 * len(keys)), sharex=True)
        for ax, k in zip(axes if len(keys) > 1 else [axes], keys):
            pts = [(r["step"], r[k]) for r in self.rows if r.get(k) is not None]
            ax.plot(*zip(*pts), marker=".")
            ax.set_ylabel(k, fontsize=8)
        fig.axes[-1].set_xlabel("PPO step")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
