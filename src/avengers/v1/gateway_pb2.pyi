from avengers.v1 import common_pb2 as _common_pb2
from avengers.v1 import router_pb2 as _router_pb2
from avengers.v1 import voter_pb2 as _voter_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnsembleStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENSEMBLE_STRATEGY_UNSPECIFIED: _ClassVar[EnsembleStrategy]
    ENSEMBLE_STRATEGY_SELF_CONSISTENCY: _ClassVar[EnsembleStrategy]
    ENSEMBLE_STRATEGY_MODEL_SWITCH: _ClassVar[EnsembleStrategy]
    ENSEMBLE_STRATEGY_TOP_K_VOTE: _ClassVar[EnsembleStrategy]
    ENSEMBLE_STRATEGY_SCORE_WEIGHTED_VOTE: _ClassVar[EnsembleStrategy]
    ENSEMBLE_STRATEGY_LOG_ODDS_VOTE: _ClassVar[EnsembleStrategy]
ENSEMBLE_STRATEGY_UNSPECIFIED: EnsembleStrategy
ENSEMBLE_STRATEGY_SELF_CONSISTENCY: EnsembleStrategy
ENSEMBLE_STRATEGY_MODEL_SWITCH: EnsembleStrategy
ENSEMBLE_STRATEGY_TOP_K_VOTE: EnsembleStrategy
ENSEMBLE_STRATEGY_SCORE_WEIGHTED_VOTE: EnsembleStrategy
ENSEMBLE_STRATEGY_LOG_ODDS_VOTE: EnsembleStrategy

class AskRequest(_message.Message):
    __slots__ = ("query", "task_type", "sampling", "strategy", "switch_threshold", "routing", "vote_method", "tests", "no_cache", "task_id", "entry_point", "top_k", "alpha")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    SWITCH_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    VOTE_METHOD_FIELD_NUMBER: _ClassVar[int]
    TESTS_FIELD_NUMBER: _ClassVar[int]
    NO_CACHE_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ENTRY_POINT_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    query: str
    task_type: _common_pb2.TaskType
    sampling: _common_pb2.SamplingParams
    strategy: EnsembleStrategy
    switch_threshold: float
    routing: _router_pb2.RoutingStrategy
    vote_method: _voter_pb2.VoteMethod
    tests: _containers.RepeatedScalarFieldContainer[str]
    no_cache: bool
    task_id: str
    entry_point: str
    top_k: int
    alpha: float
    def __init__(self, query: _Optional[str] = ..., task_type: _Optional[_Union[_common_pb2.TaskType, str]] = ..., sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., strategy: _Optional[_Union[EnsembleStrategy, str]] = ..., switch_threshold: _Optional[float] = ..., routing: _Optional[_Union[_router_pb2.RoutingStrategy, str]] = ..., vote_method: _Optional[_Union[_voter_pb2.VoteMethod, str]] = ..., tests: _Optional[_Iterable[str]] = ..., no_cache: _Optional[bool] = ..., task_id: _Optional[str] = ..., entry_point: _Optional[str] = ..., top_k: _Optional[int] = ..., alpha: _Optional[float] = ...) -> None: ...

class AskResponse(_message.Message):
    __slots__ = ("request_id", "answer", "text", "models", "cluster", "router_version", "vote", "failed_models", "cached", "task_type", "samples", "usage")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    ROUTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    VOTE_FIELD_NUMBER: _ClassVar[int]
    FAILED_MODELS_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    answer: str
    text: str
    models: _containers.RepeatedScalarFieldContainer[str]
    cluster: int
    router_version: str
    vote: _voter_pb2.VoteResponse
    failed_models: _containers.RepeatedScalarFieldContainer[str]
    cached: bool
    task_type: _common_pb2.TaskType
    samples: _containers.RepeatedCompositeFieldContainer[_common_pb2.Sample]
    usage: _common_pb2.Usage
    def __init__(self, request_id: _Optional[str] = ..., answer: _Optional[str] = ..., text: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ..., cluster: _Optional[int] = ..., router_version: _Optional[str] = ..., vote: _Optional[_Union[_voter_pb2.VoteResponse, _Mapping]] = ..., failed_models: _Optional[_Iterable[str]] = ..., cached: _Optional[bool] = ..., task_type: _Optional[_Union[_common_pb2.TaskType, str]] = ..., samples: _Optional[_Iterable[_Union[_common_pb2.Sample, _Mapping]]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("request_id", "score", "comment")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    score: float
    comment: str
    def __init__(self, request_id: _Optional[str] = ..., score: _Optional[float] = ..., comment: _Optional[str] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("recorded",)
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    recorded: bool
    def __init__(self, recorded: _Optional[bool] = ...) -> None: ...

class AskEvent(_message.Message):
    __slots__ = ("route", "sample", "model_failed", "result")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FAILED_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    route: AskRoute
    sample: _common_pb2.Sample
    model_failed: AskModelFailure
    result: AskResponse
    def __init__(self, route: _Optional[_Union[AskRoute, _Mapping]] = ..., sample: _Optional[_Union[_common_pb2.Sample, _Mapping]] = ..., model_failed: _Optional[_Union[AskModelFailure, _Mapping]] = ..., result: _Optional[_Union[AskResponse, _Mapping]] = ...) -> None: ...

class AskRoute(_message.Message):
    __slots__ = ("request_id", "cluster", "router_version", "models", "task_type", "strategy", "cached")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    ROUTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    cluster: int
    router_version: str
    models: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelScore]
    task_type: _common_pb2.TaskType
    strategy: EnsembleStrategy
    cached: bool
    def __init__(self, request_id: _Optional[str] = ..., cluster: _Optional[int] = ..., router_version: _Optional[str] = ..., models: _Optional[_Iterable[_Union[_common_pb2.ModelScore, _Mapping]]] = ..., task_type: _Optional[_Union[_common_pb2.TaskType, str]] = ..., strategy: _Optional[_Union[EnsembleStrategy, str]] = ..., cached: _Optional[bool] = ...) -> None: ...

class AskModelFailure(_message.Message):
    __slots__ = ("model", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    reason: str
    def __init__(self, model: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
