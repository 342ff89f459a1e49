#!/usr/bin/env bash
# One command for whoever has a GPU: the GPU tests, the headline benchmark, a dated record.
#
#   bash scripts/gpu_check.sh            # from a fresh clone, inside the Python environment
#                                        # that already has a CUDA build of torch (>= 2.6)
#
# It imports the package from this checkout and pip-installs only the requirements that are
# missing, never torch, so the machine's CUDA torch is never replaced.
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

# The package is imported from this checkout; pip runs only for what is missing, so a machine
# that cannot reach PyPI (a cluster node, an air-gapped GPU box) works when its Python has them.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import transformers, tokenizers, h5py, numpy, tqdm, matplotlib, safetensors, pytest" 2>/dev/null; then
    grep -v '^\s*#' requirements.txt | grep -v '^torch' | grep -v '^\s*$' | xargs "$PY" -m pip install -q
    "$PY" -m pip install -q "pytest>=8"
fi
"$PY" -c "import transformers; print(f'transformers {transformers.__version__}')"

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
echo "== The README's main job on this GPU (the 2-layer sample model, 696 steps) =="
run_dir=$(mktemp -d)/run
"$PY" -m bert_tutorial.pretrain --output-dir "$run_dir" | tee "${record}-mainjob.txt"
echo "Done. Figures: ${record}.txt (commit benchmarks/records/ and update benchmarks/README.md)."
