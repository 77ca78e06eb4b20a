from avengers.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VoteMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VOTE_METHOD_UNSPECIFIED: _ClassVar[VoteMethod]
    VOTE_METHOD_MAJORITY: _ClassVar[VoteMethod]
    VOTE_METHOD_WEIGHTED: _ClassVar[VoteMethod]
VOTE_METHOD_UNSPECIFIED: VoteMethod
VOTE_METHOD_MAJORITY: VoteMethod
VOTE_METHOD_WEIGHTED: VoteMethod

class Candidate(_message.Message):
    __slots__ = ("text", "model", "weight")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    text: str
    model: str
    weight: float
    def __init__(self, text: _Optional[str] = ..., model: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class VoteRequest(_message.Message):
    __slots__ = ("task_type", "candidates", "method", "tests", "timeout_seconds", "switch_threshold", "entry_point")
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TESTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SWITCH_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ENTRY_POINT_FIELD_NUMBER: _ClassVar[int]
    task_type: _common_pb2.TaskType
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    method: VoteMethod
    tests: _containers.RepeatedScalarFieldContainer[str]
    timeout_seconds: float
    switch_threshold: float
    entry_point: str
    def __init__(self, task_type: _Optional[_Union[_common_pb2.TaskType, str]] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., method: _Optional[_Union[VoteMethod, str]] = ..., tests: _Optional[_Iterable[str]] = ..., timeout_seconds: _Optional[float] = ..., switch_threshold: _Optional[float] = ..., entry_point: _Optional[str] = ...) -> None: ...

class VoteCount(_message.Message):
    __slots__ = ("answer", "votes", "weight", "candidate_indices")
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    VOTES_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_INDICES_FIELD_NUMBER: _ClassVar[int]
    answer: str
    votes: int
    weight: float
    candidate_indices: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, answer: _Optional[str] = ..., votes: _Optional[int] = ..., weight: _Optional[float] = ..., candidate_indices: _Optional[_Iterable[int]] = ...) -> None: ...

class VoteResponse(_message.Message):
    __slots__ = ("answer", "text", "counts", "agreement", "task_type", "abstained", "switched")
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    ABSTAINED_FIELD_NUMBER: _ClassVar[int]
    SWITCHED_FIELD_NUMBER: _ClassVar[int]
    answer: str
    text: str
    counts: _containers.RepeatedCompositeFieldContainer[VoteCount]
    agreement: float
    task_type: _common_pb2.TaskType
    abstained: int
    switched: bool
    def __init__(self, answer: _Optional[str] = ..., text: _Optional[str] = ..., counts: _Optional[_Iterable[_Union[VoteCount, _Mapping]]] = ..., agreement: _Optional[float] = ..., task_type: _Optional[_Union[_common_pb2.TaskType, str]] = ..., abstained: _Optional[int] = ..., switched: _Optional[bool] = ...) -> None: ...
