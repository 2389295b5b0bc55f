#!/usr/bin/env bash
# The install path as a user takes it, outside this checkout: an sdist (built without torch) and a
# wheel built from that sdist against PYTHON's torch with the default, portable -march; the wheel
# installed into a fresh virtual environment under a temporary folder; then, from another temporary
# folder, `rbr-fast --version`, every subcommand's --help, `eval` and `ppo` on a tiny random model,
# and the C++ backend: the wheel's prebuilt extension, then (the recorded torch changed to simulate
# a mismatch) the extension recompiled from the sources inside the installed package.
#
#   .ci/install_check.sh [PYTHON]   PYTHON: has torch, setuptools, wheel, pybind11, ninja and build
#                                   (default: .venv/bin/python, what `make` installs)
# TORCH (default torch==2.13.0) is what the fresh environment installs first, so that resolving the
# wheel's dependencies never pulls another torch build.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
py=${1:-$repo/.venv/bin/python}
torch_req=${TORCH:-torch==2.13.0}
work=$(mktemp -d "${TMPDIR:-/tmp}/rbr_fast_install.XXXXXX")
passed=0
step() { printf '\n== install check [%3ds]: %s\n' "$SECONDS" "$*"; }
ok() { passed=$((passed + 1)); echo "ok: $*"; }
# a closing 'N passed, N failed' line either way, for whoever reads the end of the log
trap 'rc=$?; rm -rf "$work"; echo "install check: $passed passed, $((rc != 0)) failed"; exit $rc' EXIT

step "sdist (isolated build, no torch) and a wheel built from it (no isolation: links against $("$py" -c 'import torch; print(torch.__version__)'))"
"$py" -m build --sdist --outdir "$work/dist" "$repo" > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
mkdir "$work/src"
tar xzf "$work"/dist/rbr_fast-*.tar.gz -C "$work/src"
env -u RBR_FAST_MARCH "$py" -m build --wheel --no-isolation --outdir "$work/dist" "$work"/src/rbr_fast-*/ \
  >> "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
ls -l "$work/dist"

step "what the artifacts carry"
msg=$("$py" - "$work/dist" <<'EOF'
import json, platform, sys, tarfile, zipfile
from pathlib import Path
import torch
dist = Path(sys.argv[1])
sdist = tarfile.open(next(dist.glob("*.tar.gz")))
names = sdist.getnames()
top = names[0].split("/")[0]
for need in ("setup.py", "pyproject.toml", "MANIFEST.in", "csrc/module.cpp", "csrc/simd.h", "rbr_fast/ops/build_flags.py",
             "rbr_fast/data/xstest/xstest_prompts.csv"):
    assert f"{top}/{need}" in names, f"sdist lacks {need}"
assert not [n for n in names if n.endswith(".so")], "sdist carries a built extension"
def torch_requirement(metadata: str) -> str:
    return next(line for line in metadata.splitlines() if line.startswith("Requires-Dist: torch"))
sdist_torch = torch_requirement(sdist.extractfile(f"{top}/PKG-INFO").read().decode())
assert "==" not in sdist_torch, f"the sdist should accept any supported torch: {sdist_torch}"

wheel = zipfile.ZipFile(next(dist.glob("*.whl")))
names = wheel.namelist()
assert [n for n in names if n.startswith("rbr_fast/_C") and n.endswith(".so")], "wheel lacks rbr_fast/_C*.so"
assert "rbr_fast/csrc/module.cpp" in names and "rbr_fast/csrc/simd.h" in names, "wheel lacks the packaged csrc/"
for need in ("rbr_fast/grading/smollm2_heads.safetensors", "rbr_fast/reward/xstest_weights.json",
             "rbr_fast/data/rbr_gold/train.jsonl", "rbr_fast/data/rbr_gold/LICENSE", "rbr_fast/data/xstest/LICENSE",
             "rbr_fast/data/written/rare_train.jsonl", "rbr_fast/data/written/prompts.jsonl",
             "rbr_fast/data/written/LICENSE"):
    assert need in names, f"wheel lacks {need}"
record = json.loads(wheel.read("rbr_fast/_C_build.json"))
series = ".".join(torch.__version__.split("+")[0].split(".")[:2])
assert record["torch"] == torch.__version__, record
if platform.machine() == "x86_64":
    assert "-march=x86-64-v3" in record["cxx_flags"], record
wheel_torch = torch_requirement(wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
assert wheel_torch == f"Requires-Dist: torch=={series}.*", f"the wheel should pin torch {series}: {wheel_torch}"
print(f"sdist {sdist_torch}; wheel {wheel_torch}, built with {' '.join(record['cxx_flags'])}")
EOF
)
ok "$msg"
if [ "$(uname -m)" = x86_64 ] && command -v objdump > /dev/null; then
  "$py" -m zipfile -e "$work"/dist/*.whl "$work/whl"
  # AVX-512 code would not run on an AVX2-only CPU: it may only be in rbr_fast::wide<...>, which
  # by_width enters after checking the CPU (csrc/simd.h). GCC uses AVX-512 at 128 and 256 bits on
  # registers 0-15 too, so look at the encoding, not the operands: every AVX-512 instruction is
  # EVEX-encoded, i.e. its first byte after any legacy prefixes is 0x62 (never an opcode in 64-bit mode)
  report=$(objdump -d -C "$work"/whl/rbr_fast/_C*.so | awk -F '\t' '
      /^[0-9a-f]+ <.*>:$/ { fn = $0; wide = index($0, "<void rbr_fast::wide<") > 0; nw += wide; next }
      NF >= 3 && $3 != "" && $2 ~ /^((26|2e|36|3e|64|65|66|67|f2|f3) )*62 / { if (wide) w++; else bad[fn]++ }
      END { for (f in bad) print "outside:", bad[f], substr(f, 1, 160); print nw, w }')
  echo "$report" | grep -q '^outside:' && { echo "the wheel's extension uses AVX-512 outside rbr_fast::wide:"; echo "$report"; exit 1; }
  ok "AVX-512 only inside the CPU-checked rbr_fast::wide functions (functions, instructions: $report)"
fi

step "fresh environment: $torch_req, then the wheel and its dependencies"
"$py" -m venv "$work/venv"
bin=$work/venv/bin
# --no-compile: byte-compiling all of torch takes longer than compiling what gets imported
"$bin/pip" install -q --no-compile "$torch_req"
"$bin/pip" install -q --no-compile "$work"/dist/rbr_fast-*.whl
"$bin/pip" check > /dev/null
ok "installed with its dependencies: $("$bin/pip" list 2>/dev/null | grep -E '^(rbr_fast|torch|transformers) ' | tr -s ' ' | paste -sd ';')"

# from a folder with no checkout and no ../shared beside it; nothing from the checkout's environment
mkdir -p "$work/run/cwd"
cd "$work/run/cwd"
unset PYTHONPATH RBR_FAST_DATA RBR_FAST_BACKEND RBR_FAST_MARCH
export RBR_FAST_CACHE=$work/run/cache TORCH_EXTENSIONS_DIR=$work/run/torch_extensions HF_HUB_OFFLINE=1
site=$("$bin/python" -c 'import rbr_fast, os; print(os.path.dirname(rbr_fast.__file__))')
case $site in "$work/venv/"*) ;; *) echo "rbr_fast imports from $site, not the fresh environment"; exit 1 ;; esac
[ ! -e ../shared ] || { echo "$PWD/../shared exists"; exit 1; }
! grep -rn --include='*.py' '\.\./shared' "$site" || { echo "the installed package refers to ../shared"; exit 1; }
"$bin/python" -c 'from rbr_fast import data; import sys; assert str(data.root()).startswith(sys.argv[1]), data.root()' "$site"
ok "rbr_fast and its data come from $site; no ../shared"

step "rbr-fast --version and every subcommand's --help"
version=$("$bin/python" -c 'import importlib.metadata as m; print(m.version("rbr_fast"))')
[ "$("$bin/rbr-fast" --version)" = "rbr-fast $version" ] || { echo "rbr-fast --version: $("$bin/rbr-fast" --version)"; exit 1; }
subcommands=$("$bin/rbr-fast" --help | grep -o -m1 '{[a-z,-]*}' | tr -d '{}' | tr , ' ')
[ -n "$subcommands" ] || { echo "no subcommands found in rbr-fast --help"; exit 1; }
for c in $subcommands; do "$bin/rbr-fast" "$c" --help > /dev/null || { echo "rbr-fast $c --help failed"; exit 1; }; done
ok "rbr-fast --version: rbr-fast $version; --help of: $subcommands"

step "rbr-fast eval and rbr-fast ppo on a tiny random model"
"$bin/python" -c 'import sys; from rbr_fast.bench import tiny_lm
tiny_lm.model().save_pretrained(sys.argv[1]); tiny_lm.tokenizer().save_pretrained(sys.argv[1])' "$work/run/tiny"
"$bin/rbr-fast" eval --prompts 8 --model "$work/run/tiny" --dtype float32 --device cpu --out-dir eval
test -s eval/report.json
ok "rbr-fast eval wrote eval/report.json"
"$bin/rbr-fast" ppo --policy "$work/run/tiny" --grader "$work/run/tiny" --rbr-weights hand --steps 1 --batch-size 2 \
  --mini-batch-size 2 --max-new-tokens 8 --eval-prompts 2 --ppo-epochs 1 --save-every 0 --save-policy false \
  --device cpu --bf16 off --progress false --out-dir ppo
test -s ppo/metrics.jsonl
ok "rbr-fast ppo wrote ppo/metrics.jsonl"
"$bin/python" -c 'from rbr_fast.grading import embedded; from rbr_fast.grading.heads import PropositionHeads
from rbr_fast.reward import RewardWeights; from rbr_fast.rules import RuleSpec; spec = RuleSpec.default()
h = PropositionHeads.load(embedded.default_heads()); RewardWeights.named("xstest", spec)
print(f"{len(h.heads)} heads, {len(h.priors)} priors")' > heads.txt
ok "the shipped grader heads and XSTest weights load from the wheel: $(cat heads.txt)"

step "the C++ backend: the wheel's extension, then a simulated torch mismatch (recompiled from the packaged sources)"
op_check='import sys, warnings
import torch
import rbr_fast
from rbr_fast.ops import backend_name, extension
from rbr_fast.ops.advantages import reference
expected_warning, extension_under = sys.argv[1], sys.argv[2]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert backend_name("cpu") == "cpp", backend_name("cpu")
    g = torch.Generator().manual_seed(0)
    r, v = torch.randn(4, 33, generator=g), torch.randn(4, 33, generator=g)
    mask = torch.arange(33) < torch.tensor([[33], [20], [7], [1]])
    adv, ret = rbr_fast.gae(r, v, mask, gamma=0.99, lam=0.95)
ref_adv, ref_ret = reference.gae(r, v, mask, 0.99, 0.95)[:2]
torch.testing.assert_close(adv, ref_adv)
torch.testing.assert_close(ret, ref_ret)
notes = [str(w.message) for w in caught if "rbr_fast" in str(w.message)]
assert extension.loaded_from().startswith(extension_under), extension.loaded_from()
if expected_warning:
    assert len(notes) == 1 and expected_warning in notes[0], notes
else:
    assert not notes, notes
print(f"gae on the cpp backend ({extension.loaded_from()}) matches the reference; warnings: {notes or None}")'
msg=$(RBR_FAST_BACKEND=cpp "$bin/python" -c "$op_check" "" "$site/_C")
ok "$msg"
"$bin/python" -c 'import json, sys; p = sys.argv[1]; r = json.load(open(p)); r["torch"] = "2.0.0"; json.dump(r, open(p, "w"))' \
  "$site/_C_build.json"
torch_version=$("$bin/python" -c 'import torch; print(torch.__version__)')
msg=$(RBR_FAST_BACKEND=cpp "$bin/python" -c "$op_check" \
  "built against torch 2.0.0 but torch $torch_version is installed; compiling it from $site/csrc " "$TORCH_EXTENSIONS_DIR")
ok "$msg"
