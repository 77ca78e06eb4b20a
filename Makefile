# Entry points; each target sets up .venv first (idempotent).
.PHONY: setup up test test-vllm protos lint bench-offline

setup:
	scripts/setup.sh

# The main job on the embedded default: every service on localhost (embedded Qdrant, in-process cache,
# SmolLM2-135M and Gemma 3 270M on the CPU), then `.venv/bin/avengers ask "..."` from another shell.
up: setup
	.venv/bin/avengers up

test: setup
	.venv/bin/python -m pytest -q

# The project's vLLM engine and model pools against the real vLLM (CPU build) in its own venv
# (scripts/setup_vllm.sh: ~/.cache/avengers/vllm-venv and the converted SmolLM2-135M, both cached).
test-vllm:
	scripts/setup_vllm.sh
	AVENGERS_VLLM_LANE=1 $${AVENGERS_VLLM_VENV:-$$HOME/.cache/avengers/vllm-venv}/bin/python -m pytest -q tests/vllm_lane

protos:
	.venv/bin/python scripts/gen_protos.py

lint:
	.venv/bin/ruff check src services tests bench scripts
