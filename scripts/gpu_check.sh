#!/usr/bin/env bash
# One command for whoever has a GPU: the GPU tests, the headline benchmark, a dated record.
#
#   bash scripts/gpu_check.sh            # from a fresh clone, inside the Python environment
#                                        # that already has a CUDA build of torch (>= 2.6)
#
# It installs the package and its other dependencies WITHOUT torch (pip --no-deps for the
# package, then the requirements minus torch), so the machine's CUDA torch is never replaced.
# Writes benchmarks/records/gpu-<date>-<gpu>.{json,txt}; commit them with the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

"$PY" - <<'PY'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"no CUDA GPU visible to torch {torch.__version__} (build CUDA {torch.version.cuda}); "
             "run this inside the environment that has your CUDA torch")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} x "
      f"{torch.cuda.get_device_name(0)}")
PY

"$PY" -m pip install -q --no-deps -e .
grep -v '^\s*#' requirements.txt | grep -v '^torch' | grep -v '^\s*$' | xargs "$PY" -m pip install -q
"$PY" -m pip install -q "pytest>=8"

echo "== GPU tests (tests/test_gpu.py, marker 'cuda') =="
"$PY" -m pytest -q -m cuda tests/test_gpu.py

stamp=$(date -u +%Y-%m-%d)
gpu=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-'))")
record="benchmarks/records/gpu-${stamp}-${gpu}"
mkdir -p benchmarks/records
echo "== Headline benchmark: BERT-base, T=128 and T=512 -> ${record}.{json,txt} =="
"$PY" benchmarks/bench_step.py --model-size base --seq-lens 128 512 \
    --variants original,project,project+compile --json "${record}.json" | tee "${record}.txt"
"$PY" benchmarks/bench_data.py --samples 100000 --json "${record}-data.json" | tee "${record}-data.txt"
echo "Done. Figures: ${record}.txt (commit benchmarks/records/ and update benchmarks/README.md)."
