#!/usr/bin/env bash
# The GPU benchmark in one short run: JAX with CUDA against Captum on the same GPU.
#
# For a machine that has JAX (CUDA), PyTorch (CUDA) and Flax's other dependencies but no
# network, such as the project's lent GPU machines. Prepare here (with network), from
# the repository root:
#
#   bash benchmarks/gpu_run.sh --prepare    # wheels into .whl/, MNIST's test files into .mnist/
#
# then run on the GPU machine, carrying .whl and .mnist (both git-ignored):
#
#   bash benchmarks/gpu_run.sh              # writes benchmarks/results/gpu.{md,csv,machine.json}
#
# The run installs the carried wheels (Captum and Flax at the CPU table's versions;
# platformdirs) into /tmp/saliency_guide-site, imports the package from src/, trains
# the two models on the first 8,000 test digits as CI does (seconds on a GPU), and
# times the methods the CPU table's goals name at batches 32 and 256 (bench.py --device
# gpu: no XLA flags, no memory probe). Extra arguments go to bench.py. With $OUT set
# (the device tool's output folder) the results are copied there too.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--prepare" ]]; then
  # Captum and Flax at the versions the CPU table was recorded with (its machine
  # record), so the two tables differ by the device; platformdirs (Flax needs it) as is.
  WHEELS=$(python3 -c 'import json; m = json.load(open("benchmarks/results/cpu.machine.json"))
print("captum==%s flax==%s platformdirs" % (m["captum"], m["flax"]))')
  mkdir -p .whl .mnist
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_17_x86_64 -d .whl $WHEELS
  cp "${SALIENCY_GUIDE_MNIST_DIR:-../shared/data/mnist}"/t10k-*-idx*-ubyte.gz .mnist/
  ls -l .whl .mnist
  exit 0
fi

python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/saliency_guide-site .whl/*.whl
export PYTHONPATH="$PWD/src:/tmp/saliency_guide-site${PYTHONPATH:+:$PYTHONPATH}"
export SALIENCY_GUIDE_MNIST_DIR="$PWD/.mnist"
export SALIENCY_GUIDE_TRAIN_SPLIT='test[:8000]' SALIENCY_GUIDE_EVAL_SPLIT='test[8000:]'
export SALIENCY_GUIDE_CACHE="${SALIENCY_GUIDE_CACHE:-/tmp/saliency_guide-models}"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
python3 benchmarks/bench.py --device gpu --batches 32 256 --min-seconds 1 \
  --methods gradients gradients_x_inputs ig64_gausslegendre smoothgrad25 eg64 \
            guided_backprop grad_cam "$@"
if [[ -n "${OUT:-}" ]]; then
  cp benchmarks/results/gpu.* "$OUT"/
fi
