"""Generation engines behind one small async interface (vLLM, OpenAI-compatible HTTP, llama.cpp, replay)."""
