from avengers.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RoutingStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUTING_STRATEGY_UNSPECIFIED: _ClassVar[RoutingStrategy]
    ROUTING_STRATEGY_NEAREST: _ClassVar[RoutingStrategy]
    ROUTING_STRATEGY_SOFT: _ClassVar[RoutingStrategy]
    ROUTING_STRATEGY_KNN: _ClassVar[RoutingStrategy]
    ROUTING_STRATEGY_HKNN: _ClassVar[RoutingStrategy]
    ROUTING_STRATEGY_LOGISTIC: _ClassVar[RoutingStrategy]
    ROUTING_STRATEGY_MF: _ClassVar[RoutingStrategy]
    ROUTING_STRATEGY_SHRINKAGE: _ClassVar[RoutingStrategy]

class CentroidDistance(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CENTROID_DISTANCE_UNSPECIFIED: _ClassVar[CentroidDistance]
    CENTROID_DISTANCE_EUCLIDEAN: _ClassVar[CentroidDistance]
    CENTROID_DISTANCE_COSINE: _ClassVar[CentroidDistance]
ROUTING_STRATEGY_UNSPECIFIED: RoutingStrategy
ROUTING_STRATEGY_NEAREST: RoutingStrategy
ROUTING_STRATEGY_SOFT: RoutingStrategy
ROUTING_STRATEGY_KNN: RoutingStrategy
ROUTING_STRATEGY_HKNN: RoutingStrategy
ROUTING_STRATEGY_LOGISTIC: RoutingStrategy
ROUTING_STRATEGY_MF: RoutingStrategy
ROUTING_STRATEGY_SHRINKAGE: RoutingStrategy
CENTROID_DISTANCE_UNSPECIFIED: CentroidDistance
CENTROID_DISTANCE_EUCLIDEAN: CentroidDistance
CENTROID_DISTANCE_COSINE: CentroidDistance

class RouteRequest(_message.Message):
    __slots__ = ("query", "embedding", "top_n", "strategy", "top_k", "beta", "alpha", "distance")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    BETA_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    query: str
    embedding: _common_pb2.Vector
    top_n: int
    strategy: RoutingStrategy
    top_k: int
    beta: float
    alpha: float
    distance: CentroidDistance
    def __init__(self, query: _Optional[str] = ..., embedding: _Optional[_Union[_common_pb2.Vector, _Mapping]] = ..., top_n: _Optional[int] = ..., strategy: _Optional[_Union[RoutingStrategy, str]] = ..., top_k: _Optional[int] = ..., beta: _Optional[float] = ..., alpha: _Optional[float] = ..., distance: _Optional[_Union[CentroidDistance, str]] = ...) -> None: ...

class ClusterDistance(_message.Message):
    __slots__ = ("cluster", "distance", "weight")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    cluster: int
    distance: float
    weight: float
    def __init__(self, cluster: _Optional[int] = ..., distance: _Optional[float] = ..., weight: _Optional[float] = ...) -> None: ...

class RouteResponse(_message.Message):
    __slots__ = ("cluster", "distance", "models", "router_version", "clusters", "strategy", "alpha", "explored")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    ROUTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    EXPLORED_FIELD_NUMBER: _ClassVar[int]
    cluster: int
    distance: float
    models: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelScore]
    router_version: str
    clusters: _containers.RepeatedCompositeFieldContainer[ClusterDistance]
    strategy: RoutingStrategy
    alpha: float
    explored: bool
    def __init__(self, cluster: _Optional[int] = ..., distance: _Optional[float] = ..., models: _Optional[_Iterable[_Union[_common_pb2.ModelScore, _Mapping]]] = ..., router_version: _Optional[str] = ..., clusters: _Optional[_Iterable[_Union[ClusterDistance, _Mapping]]] = ..., strategy: _Optional[_Union[RoutingStrategy, str]] = ..., alpha: _Optional[float] = ..., explored: _Optional[bool] = ...) -> None: ...

class GetRouterInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RouterInfo(_message.Message):
    __slots__ = ("router_version", "models", "num_clusters", "embedder_model", "dimension", "fit_params", "created_at", "strategies", "has_costs", "feedback_observations")
    class FitParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ROUTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NUM_CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_MODEL_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    FIT_PARAMS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STRATEGIES_FIELD_NUMBER: _ClassVar[int]
    HAS_COSTS_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    router_version: str
    models: _containers.RepeatedScalarFieldContainer[str]
    num_clusters: int
    embedder_model: str
    dimension: int
    fit_params: _containers.ScalarMap[str, str]
    created_at: str
    strategies: _containers.RepeatedScalarFieldContainer[str]
    has_costs: bool
    feedback_observations: int
    def __init__(self, router_version: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ..., num_clusters: _Optional[int] = ..., embedder_model: _Optional[str] = ..., dimension: _Optional[int] = ..., fit_params: _Optional[_Mapping[str, str]] = ..., created_at: _Optional[str] = ..., strategies: _Optional[_Iterable[str]] = ..., has_costs: _Optional[bool] = ..., feedback_observations: _Optional[int] = ...) -> None: ...
