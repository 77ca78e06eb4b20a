# Entry points; each target sets up .venv first (idempotent).
.PHONY: setup up test protos lint bench-offline

setup:
	scripts/setup.sh

# The main job on the embedded default: every service on localhost (embedded Qdrant, in-process cache,
# SmolLM2 on the CPU), then `.venv/bin/avengers ask "..."` from another shell.
up: setup
	.venv/bin/avengers up

test: setup
	.venv/bin/python -m pytest -q

protos:
	.venv/bin/python scripts/gen_protos.py

lint:
	.venv/bin/ruff check src services tests bench scripts
