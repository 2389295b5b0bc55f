#!/usr/bin/env bash
# Create (or reuse) a separate venv for the TRL PPO peer benchmark (benchmarks/trl_ppo_peer.py).
# Usage: bash benchmarks/setup_trl_ppo_venv.sh [VENV_PATH]   (default: .venv-trlppo)
# trl 1.12.0 is the newest release that still ships trl.experimental.ppo.PPOTrainer (removed in 1.13.0).
# torch is pinned to the CPU build via its local version label (==2.13.0+cpu), so a CUDA build can never be
# selected: the wheel comes from $TORCH_WHEELS (default /opt/wheels, if present) or from an extra index that the
# caller configures (e.g. PIP_EXTRA_INDEX_URL=<PyTorch CPU wheel index>).
# Idempotent: re-running only installs what is missing or at a different version.
set -euo pipefail
VENV="${1:-.venv-trlppo}"
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
TORCH_WHEELS="${TORCH_WHEELS:-/opt/wheels}"
FIND_LINKS=(); [ -d "$TORCH_WHEELS" ] && FIND_LINKS=(--find-links "$TORCH_WHEELS")
"$VENV/bin/python" -m pip install -q "${FIND_LINKS[@]}" "torch==2.13.0+cpu"
"$VENV/bin/python" -m pip install -q \
  "trl==1.12.0" "transformers==5.24.0" "accelerate==1.15.0" "datasets==5.2.0"
"$VENV/bin/python" - <<'PY'
import torch, transformers, accelerate, datasets, trl
from trl.experimental.ppo import PPOTrainer  # noqa: F401
assert not torch.version.cuda, f"expected a CPU torch build, got CUDA {torch.version.cuda}"
print("trl", trl.__version__, "transformers", transformers.__version__, "accelerate", accelerate.__version__,
      "datasets", datasets.__version__, "torch", torch.__version__)
PY
