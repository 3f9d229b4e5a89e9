#!/usr/bin/env bash
# The GPU check in one command: install the wheels it is handed, run the CUDA tests, run the
# 7B-shape benchmarks and write their absolute times into docs/performance.md.
#
#   benchmarks/gpu_check.sh                        # on the GPU machine (no network): about 6-8 min on one H100
#   benchmarks/gpu_check.sh --device cpu --dry-run # here / in CI: the same steps, nothing installed, on the CPU
#
# What the GPU machine has (docs/performance.md, "The GPU check"): Python 3.12, torch, numpy,
# pillow, opencv, pytest, accelerate and a transformers older than vidprune accepts; no PyAV, no
# network. The wheels it lacks travel with the tree, fetched beforehand on a machine with PyPI
# (they are not in git: benchmarks/gpu_wheels/ is ignored):
#
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#       -d benchmarks/gpu_wheels av==15.1.0 transformers==5.18.0
#
# (PyAV 15.1 cp312 is about 40 MB, transformers 5.18 about 12.6 MB: with the tree, under 64 MiB.)
#
# Steps, each timed:
#   1. install: pip install --no-index --no-deps benchmarks/gpu_wheels/*.whl (dry run: list them)
#   2. tests:   pytest -m gpu tests/test_gpu.py on $DEVICE (VIDPRUNE_GPU_TEST_DEVICE); the dry run
#               runs a subset on the CPU (one family), so the code of the GPU tests runs in CI
#   3. bench:   benchmarks/run_all.py --device $DEVICE --only prefill,ask,prefix_reuse
#               --families video_llava (32 Vicuna-7B layers, random bf16 weights, checkpoints built
#               once in a temp folder); writes docs/performance.md (dry run: run_all --dry-run checks
#               that each benchmark takes the GPU run's arguments; nothing runs or is written)
# With $OUT set (the lent machine's output folder), docs/performance.md and the logs are copied there.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda
DRY_RUN=0
WHEELS=benchmarks/gpu_wheels
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --device=*) DEVICE="${1#*=}"; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --wheels) WHEELS="$2"; shift 2 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $1; use --device cuda|cpu, --dry-run, --wheels DIR" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false
LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/vidprune-gpu-check.XXXXXX")
START=$(date +%s)
step() { echo "--- gpu_check [$(( $(date +%s) - START ))s] $*"; }
finish() {
  rc=$?
  if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
    cp -f docs/performance.md "$OUT/" 2>/dev/null || true
    cp -f "$LOG_DIR"/*.log "$OUT/" 2>/dev/null || true
  fi
  echo "--- gpu_check: exit $rc after $(( $(date +%s) - START ))s (logs: $LOG_DIR)"
}
trap finish EXIT

# ---------------------------------------------------------------- 1. wheels
step "1/3 wheels from $WHEELS"
shopt -s nullglob
wheels=("$WHEELS"/av-15.1.0-cp312-*.whl "$WHEELS"/transformers-5.18.0-py3-none-any.whl)
if [ "$DRY_RUN" = 1 ]; then
  for w in av-15.1.0-cp312 transformers-5.18.0; do
    found=("$WHEELS"/$w*.whl)
    if [ ${#found[@]} -gt 0 ]; then echo "would install ${found[0]}"; else echo "would install $w (absent here: fetch it with the pip download above)"; fi
  done
else
  if [ ${#wheels[@]} -lt 2 ]; then
    echo "gpu_check: $WHEELS must hold av-15.1.0-cp312-*.whl and transformers-5.18.0-py3-none-any.whl; fetch them with the pip download in this script's header" >&2
    exit 2
  fi
  "$PY" -m pip install -q --no-index --no-deps "${wheels[@]}" 2>&1 | tee "$LOG_DIR/install.log"
fi
"$PY" - <<'EOF' 2>&1 | tee "$LOG_DIR/versions.log"
import importlib.util, platform
import torch, transformers
from vidprune.video_models.hf_internals import check_transformers_version
check_transformers_version()  # one line and exit 2 if vidprune does not accept this transformers
flash = importlib.util.find_spec("flash_attn") is not None
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"transformers {transformers.__version__}, av {'present' if importlib.util.find_spec('av') else 'ABSENT'}, "
      f"accelerate {'present' if importlib.util.find_spec('accelerate') else 'ABSENT'}, flash_attn {flash}, "
      f"GPU: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
EOF

# ---------------------------------------------------------------- 2. tests
step "2/3 pytest -m gpu on $DEVICE"
PYTEST_ARGS=(-q -m gpu -p no:cacheprovider tests/test_gpu.py)
if [ "$DRY_RUN" = 1 ]; then
  # one family, the stock identity in fp32 and the device_map split: the CPU runs the tests' code quickly
  PYTEST_ARGS+=(-k "video_llava and (test_pruning_off_generates_exactly_the_stock_model and float32 or test_device_map)")
fi
VIDPRUNE_GPU_TEST_DEVICE="$DEVICE" "$PY" -m pytest "${PYTEST_ARGS[@]}" 2>&1 | tee "$LOG_DIR/pytest.log"
test "${PIPESTATUS[0]}" = 0

# ---------------------------------------------------------------- 3. benchmarks
step "3/3 benchmarks/run_all.py"
BENCH_DEVICE="$DEVICE"
[ "$DRY_RUN" = 1 ] && BENCH_DEVICE=cuda  # nothing runs: check the very commands the GPU run gives
BENCH_ARGS=(--device "$BENCH_DEVICE" --only prefill,ask,prefix_reuse --families video_llava)
[ "$BENCH_DEVICE" = cpu ] || BENCH_ARGS+=(--layers 32)
if [ "$DRY_RUN" = 1 ]; then
  BENCH_ARGS+=(--dry-run)
fi
VIDPRUNE_BENCH_CHECKPOINTS="$LOG_DIR/checkpoints" "$PY" benchmarks/run_all.py "${BENCH_ARGS[@]}" 2>&1 | tee "$LOG_DIR/bench.log"
test "${PIPESTATUS[0]}" = 0
rm -rf "$LOG_DIR/checkpoints"
step "done"
