#!/usr/bin/env bash
# One GPU check that fits a 15-minute lease with room to rerun: about 8 minutes on one H100
# (12 at worst: the sum of the steps' time limits).
#
#   bash scripts/gpu_check.sh              # on the GPU machine, inside the Python environment
#                                          # that already has a CUDA build of torch (>= 2.6)
#   bash scripts/gpu_check.sh --cpu-quick  # on a CPU: every command below in its --quick form
#                                          # (what tests/test_benchmark.py runs)
#
# What it runs, each step under its own `timeout` so that one hang cannot eat the lease (a
# step that fails or times out is recorded and the others still run):
#   1. the `cuda` tests (tests/test_gpu.py);
#   2. T=512 shards of Pride and Prejudice (bert_tutorial.teach.book_shards, ~2,600 sequences);
#   3. T=128 on data_samples/train (real padding, a new batch per step through the Trainer's
#      loader), batch 128: original and the project step compiled with every speed switch
#      (fused QKV, bf16 LayerNorm outputs, clipping in the fused AdamW, unpadding), profiled,
#      and 60 steps of the package's Trainer with that config, its logged seq/s beside the
#      benchmark's;
#   4. T=128, batch 256: project+compile, then every switch, then every switch with CUDA
#      graphs (compile mode reduce-overhead), profiled;
#   5. T=512 on the Austen shards (26 % padding), batch 32: compiled, padded and
#      unpadded (both without attention dropout, which flash's varlen kernel lacks), profiled;
#   6. one dated record: benchmarks/records/gpu-check_<date>_<gpu>.json (every step's exit code
#      and seconds, the test summary, every benchmark report, the fastest T=128 row and its
#      profile table, the Trainer comparison), its console log beside it (.txt).
#
# It imports the package from this checkout and pip-installs only the requirements that are
# missing, never torch, so the machine's CUDA torch is never replaced.
# GPU_CHECK_RECORDS=DIR writes the record elsewhere; GPU_CHECK_WORKERS sets the loader workers (2).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
QUICK=0
if [ "${1:-}" = "--cpu-quick" ]; then
    QUICK=1
elif [ -n "${1:-}" ]; then
    echo "usage: bash scripts/gpu_check.sh [--cpu-quick]" >&2
    exit 2
fi

if [ "$QUICK" = 0 ]; then
    "$PY" - <<'PY' || exit 1
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"no CUDA GPU visible to torch {torch.__version__} (build CUDA {torch.version.cuda}); "
             "run this inside the environment that has your CUDA torch (--cpu-quick on a CPU)")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} x "
      f"{torch.cuda.get_device_name(0)}")
PY
fi

# The package is imported from this checkout; pip runs only for what is missing, so a machine
# that cannot reach PyPI (a cluster node, an air-gapped GPU box) works when its Python has them.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import transformers, tokenizers, h5py, numpy, tqdm, matplotlib, safetensors, pytest" 2>/dev/null; then
    grep -v '^\s*#' requirements.txt | grep -v '^torch' | grep -v '^\s*$' | xargs "$PY" -m pip install -q
    "$PY" -m pip install -q "pytest>=8"
fi
export TQDM_DISABLE=1  # the Trainer's progress bar would fill the log

stamp=$(date -u +%Y-%m-%d)
if [ "$QUICK" = 1 ]; then
    gpu=cpu-quick
    bench=(--quick --device cpu --threads 1 --profile-steps 2)
    trainer_steps=6
    b128=4 b256=8 b512=2
    no_compile() { local v=${1//+compile/}; echo "${v//+graphs/}"; }  # inductor on a CPU takes minutes
else
    gpu=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-'))")
    bench=()
    trainer_steps=60
    b128=128 b256=256 b512=32
    no_compile() { echo "$1"; }
fi
records=${GPU_CHECK_RECORDS:-benchmarks/records}
workers=${GPU_CHECK_WORKERS:-2}
mkdir -p "$records"
record="$records/gpu-check_${stamp}_${gpu}.json"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
exec > >(tee "${record%.json}.txt") 2>&1
echo "gpu_check: $(date -u '+%Y-%m-%d %H:%M:%S') UTC, record ${record}"

# run_step NAME SECONDS COMMAND...: the command under `timeout`; its exit code and duration
# go into the record (124: timed out), and the script goes on either way.
run_step() {
    local name=$1 seconds=$2 rc=0 start=$SECONDS
    shift 2
    echo
    echo "== ${name} (timeout ${seconds} s) =="
    timeout --kill-after=15 "$seconds" "$@" || rc=$?
    echo "{\"name\": \"${name}\", \"timeout_s\": ${seconds}, \"rc\": ${rc}, \"seconds\": $((SECONDS - start))}" \
        >> "$work/steps.jsonl"
    [ "$rc" = 0 ] || echo "!! ${name} failed with exit code ${rc} (124: timed out)"
}

run_step cuda-tests 150 "$PY" -m pytest -q -m cuda tests/test_gpu.py -p no:cacheprovider \
    --junitxml "$work/tests.xml"

run_step shards-512 45 "$PY" -c "
import sys
from bert_tutorial.teach.book_shards import make_sample_shards
print(make_sample_shards(sys.argv[1], 512, corpus='austen', progress=False))" "$work/austen512"

# Every speed switch of TrainConfig (benchmarks/bench_step.py's modifiers).
all=qkv+halfln+foldclip+unpad+fused  # fused: AdamW on a CPU too (--cpu-quick)
run_step t128-batch128 180 "$PY" benchmarks/bench_step.py ${bench[@]+"${bench[@]}"} \
    --data data_samples/train --num-workers "$workers" --batch-size "$b128" \
    --variants "$(no_compile original,project+compile+$all)" --profile \
    --trainer-steps "$trainer_steps" --trainer-variant "$(no_compile project+compile+$all)" \
    --json "$work/t128-batch128.json"

run_step t128-batch256 225 "$PY" benchmarks/bench_step.py ${bench[@]+"${bench[@]}"} \
    --data data_samples/train --num-workers "$workers" --batch-size "$b256" \
    --variants "$(no_compile project+compile,project+compile+$all,project+graphs+$all)" --profile \
    --json "$work/t128-batch256.json"

run_step t512-batch32 120 "$PY" benchmarks/bench_step.py ${bench[@]+"${bench[@]}"} \
    --data "$work/austen512/train" --num-workers "$workers" --batch-size "$b512" \
    --variants "$(no_compile project+compile+noattndrop,project+compile+unpad)" --profile \
    --json "$work/t512-batch32.json"

echo
echo "== Record =="
"$PY" - "$work" "$record" <<'PY'
"""Gather the steps' outputs into one record; print the fastest T=128 row and its profile."""
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, "benchmarks")
from bench_step import format_profile  # noqa: E402

work, record = Path(sys.argv[1]), Path(sys.argv[2])
steps = [json.loads(line) for line in (work / "steps.jsonl").read_text().splitlines()]
out = {"script": "scripts/gpu_check.sh", "steps": steps, "tests": None, "benchmarks": {},
       "best_t128": None, "trainer": None}
if (work / "tests.xml").is_file():
    suite = ET.parse(work / "tests.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    out["tests"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
for name in ("t128-batch128", "t128-batch256", "t512-batch32"):
    path = work / f"{name}.json"
    if path.is_file():
        out["benchmarks"][name] = json.loads(path.read_text())
reports = list(out["benchmarks"].values())
if reports:
    out["environment"] = reports[0]["environment"]
rows = [r for rep in reports for r in rep.get("model", []) if r["seq_len"] == 128]
if rows:
    best = max(rows, key=lambda r: r["seq_per_s"])
    out["best_t128"] = {k: best[k] for k in ("variant", "batch_size", "seq_per_s", "mfu",
                                             "real_token_mfu", "padding_share", "profile")}

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f} %"

    print(f"fastest T=128 row: {best['variant']} batch {best['batch_size']}: "
          f"{best['seq_per_s']:,.0f} seq/s, MFU {pct(best['mfu'])}, real-token MFU "
          f"{pct(best['real_token_mfu'])}, padding {pct(best['padding_share'])}")
    if best["profile"]:
        print(format_profile(best["profile"]))
trainer = out["benchmarks"].get("t128-batch128", {}).get("trainer")
if trainer:
    out["trainer"] = trainer
    print(f"Trainer {trainer['variant']}, {trainer['steps']} steps: steady "
          f"{trainer['seq_per_s_steady'] or 0:,.1f} seq/s; benchmark {trainer['bench_seq_per_s'] or 0:,.1f}")
failed = [s["name"] for s in steps if s["rc"] != 0]
out["failed_steps"] = failed
record.write_text(json.dumps(out, indent=2) + "\n")
print("steps: " + ", ".join(f"{s['name']} {s['seconds']} s (rc {s['rc']})" for s in steps))
print(f"wrote {record}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
sys.exit(1 if failed else 0)
PY
rc=$?
echo "Done in ${SECONDS} s. Commit ${record} and its .txt, and update benchmarks/README.md."
exit $rc
