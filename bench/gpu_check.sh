#!/usr/bin/env bash
# GPU check in at most 10 minutes on one GPU machine with its own torch (>= 2.11) and transformers (>= 5.17),
# no network and no pip install: run from the repo root after `python bench/gpu_bundle.py` made gpu-bundle/
# here and carried it there. 1) the CUDA-marked tests (<= 4 min), 2) bench/gpu_check.py (<= 5 min), which
# writes bench/results/gpu.json and gpu.md; both are copied to $OUT when it is set (the device tool's folder).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 DYNASCOPE_QUIET=1
export DYNASCOPE_DATA="$PWD/gpu-bundle/data"
OUT_DIR="${OUT:-bench/results}"
mkdir -p "$OUT_DIR"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT_DIR/gpu-smi.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
CUDA_TESTS=$(grep -rl "mark.cuda" tests --include='test_*.py' | sort)
timeout 240 python3 -m pytest -q -p no:cacheprovider -m cuda $CUDA_TESTS 2>&1 | tee "$OUT_DIR/gpu-tests.txt" | tail -20
echo "cuda tests exit code: ${PIPESTATUS[0]}" | tee -a "$OUT_DIR/gpu-tests.txt"
timeout 300 python3 bench/gpu_check.py --bundle gpu-bundle 2>&1 | tail -30
if [ "$OUT_DIR" != "bench/results" ]; then cp bench/results/gpu.json bench/results/gpu.md "$OUT_DIR"/ 2>/dev/null; fi
cat bench/results/gpu.md 2>/dev/null
