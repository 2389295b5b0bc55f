#!/usr/bin/env bash
# The GPU check, on one H100/H200 in under 8 minutes: installs what it needs, runs the GPU parity
# tests (every Triton kernel against the PyTorch reference, fp32 and bf16, shapes above L2, one host
# sync per call) and the GPU benchmark table (% of HBM bandwidth per op, time and memory against
# TRL, Liger-Kernel and Cut Cross-Entropy, grader completions/s on a random Llama-3.2-1B-shaped body).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # OUT_DIR: default $OUT, else rbr_fast_out/gpu_check
#
# Writes OUT_DIR/{env.txt, tests.txt, bench.txt, bench.csv, grader_memory.txt}. Exit status: 1 if a test failed or a
# benchmarked peer disagreed with us, else 0.
#
# The device machine has torch, triton, transformers and pytest but no package index: TRL, Liger-Kernel
# and cut-cross-entropy travel as wheels in .whl/ (fetch them here with `make gpu-wheels`) and are
# installed from there; this checkout runs from PYTHONPATH (the GPU path needs no C++ build).
# GPU_CHECK_DRY=1 runs every step on the CPU with tiny sizes and interpreted kernels: how CI tests this
# script on a machine without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-rbr_fast_out/gpu_check}}
mkdir -p "$out"
py=${PYTHON:-python3}
dry=${GPU_CHECK_DRY:-0}
status=0

if compgen -G ".whl/*.whl" > /dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --target /tmp/rbr_gpu_site .whl/*.whl || status=1
  export PYTHONPATH=/tmp/rbr_gpu_site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1

if [ "$dry" = 1 ]; then
  export TRITON_INTERPRET=1 RBR_FAST_BACKEND=triton
  device=cpu
  tests=(tests/test_gpu.py tests/test_op_advantages.py -k "triton and (long_rows or test_gae)")
  bench=(--quick --ops gae,fused_linear_token_logprobs-llama,grader-llama1b --sizes 4x100)
else
  device=cuda
  tests=(tests/test_gpu.py tests/test_op_advantages.py tests/test_op_logprobs.py tests/test_op_reward.py)
  bench=(--ops gae,ppo_advantages,masked_whiten,yes_no_logprobs,token_logprobs,fused_linear_yes_no,fused_linear_token_logprobs-llama,grader-llama1b
         --compile-budget 60 --target-time 0.3)
fi

"$py" - > "$out/env.txt" 2>&1 <<'EOF'
import importlib.metadata as md, platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"{p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, L2",
          f"{getattr(p, 'L2_cache_size', 0) / 2**20:.0f} MiB")
for name in ("triton", "transformers", "trl", "liger-kernel", "cut-cross-entropy"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "not installed")
EOF
cat "$out/env.txt"

echo "== parity tests on $device"
"$py" -m pytest -q -p no:cacheprovider "${tests[@]}" 2>&1 | tee "$out/tests.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

echo "== benchmarks on $device"
"$py" -m rbr_fast.bench --device "$device" --out "$out" "${bench[@]}" 2>&1 | tee "$out/bench.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
cp "$out/bench_results/results.csv" "$out/bench.csv" 2>/dev/null || status=1

if [ "$dry" != 1 ]; then  # on CPU this reads the profiler's timeline: minutes, not part of the dry run
  echo "== a capped grader's memory on $device"
  "$py" benchmarks/grader_memory.py --device "$device" \
      --cases bfloat16:0.6:heads,bfloat16:0.6:questions,bfloat16:1.0:questions 2>&1 | tee "$out/grader_memory.txt"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
fi
exit $status
