#!/usr/bin/env bash
# Wheels that benchmarks/gpu.py needs on the GPU machine, which reaches no package index.
#
#     bash benchmarks/gpu_wheels.sh            # -> benchmarks/wheels/*.whl (git-ignored)
#
# The GPU machine (Python 3.12, x86-64) already has torch 2.11, lightning, torchvision, numpy,
# scipy, pyyaml, packaging, opencv-python-headless, onnx, onnxruntime, tensorboard, matplotlib
# and pillow (/work/.library/device/KINDS.md). Only what the project imports beyond those
# travels, each pinned to the version installed here (the one this checkout's tests ran with),
# downloaded with --no-deps so nothing else can come along and shadow the machine's own torch,
# lightning or numpy. typing-extensions travels too: pydantic-core needs >= 4.14.1 and a newer
# typing-extensions only adds names. antlr4-python3-runtime 4.9.3 (omegaconf's parser) exists
# only as an sdist: it is pure Python, so a wheel is built here.
#
# On the GPU machine, benchmarks/gpu.py's run command (see its docstring) installs them with
#     python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site benchmarks/wheels/*.whl
# and runs with PYTHONPATH=/tmp/site:src. The script fails if the wheels exceed MAX_MIB, so
# that the working tree that travels (64 MiB in all) keeps room for the rest.
set -euo pipefail

cd "$(dirname "$0")"
OUT=wheels
MAX_MIB=${MAX_MIB:-40}
PY=${PYTHON:-python}

# distribution names: what yolov4 imports (hydra, omegaconf, pycocotools, albumentations,
# pydantic via albumentations) and their requirements the GPU machine lacks
DISTS=(
    hydra-core omegaconf antlr4-python3-runtime
    pycocotools
    albumentations albucore simsimd stringzilla
    pydantic pydantic-core annotated-types typing-inspection typing-extensions
)

# what the GPU machine has already (KINDS.md's package list): never carried, so never shadowed
MACHINE_HAS=(
    torch torchvision lightning pytorch-lightning lightning-utilities torchmetrics numpy scipy
    pyyaml packaging opencv-python-headless onnx onnxruntime onnxscript tensorboard matplotlib
    pillow
)

version() { "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }

for d in "${DISTS[@]}"; do
    if [[ " ${MACHINE_HAS[*]} " == *" $d "* ]]; then
        echo "$d is on the GPU machine already: carrying it would shadow the machine's own" >&2
        exit 1
    fi
done

rm -rf "$OUT" && mkdir -p "$OUT"
binary=()
for d in "${DISTS[@]}"; do
    v=$(version "$d")
    if [[ $d == antlr4-python3-runtime ]]; then
        "$PY" -m pip wheel -q --no-deps --no-binary :all: -w "$OUT" "$d==$v"
    else
        binary+=("$d==$v")
    fi
done
"$PY" -m pip download -q --no-deps --only-binary=:all: -d "$OUT" \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 --platform any \
    "${binary[@]}"

count=$(ls "$OUT"/*.whl | wc -l)
if [[ $count -ne ${#DISTS[@]} ]]; then
    echo "expected ${#DISTS[@]} wheels (one per distribution), found $count in $OUT" >&2
    exit 1
fi
kib=$(du -sk "$OUT" | cut -f1)
ls -1 "$OUT"
echo "$count wheels, $((kib / 1024)) MiB in benchmarks/$OUT"
if ((kib > MAX_MIB * 1024)); then
    echo "the wheels take $((kib / 1024)) MiB, more than MAX_MIB=$MAX_MIB" >&2
    exit 1
fi
