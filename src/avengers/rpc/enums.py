"""Protobuf enums <-> the lower-case names the core library uses ("math", "model_switch", "nearest", ...)."""

from __future__ import annotations

from typing import Any

from avengers.v1 import common_pb2, gateway_pb2, router_pb2, voter_pb2


class ProtoEnum:
    """One proto enum whose values are ``<PREFIX><NAME>``; value 0 (``<PREFIX>UNSPECIFIED``) maps to None."""

    def __init__(self, enum: Any, prefix: str, field: str):
        self.enum = enum
        self.prefix = prefix
        self.field = field
        """Request field name, for error messages."""

    def name(self, value: int) -> str | None:
        """Lower-case name of ``value``; None for UNSPECIFIED; ValueError for values the contract lacks."""
        if value == 0:
            return None
        try:
            return self.enum.Name(value).removeprefix(self.prefix).lower()
        except ValueError:
            raise ValueError(f"{self.field}: unknown value {value}") from None

    def value(self, name: str | None) -> int:
        """Proto value of a lower-case name (None: UNSPECIFIED)."""
        return 0 if name is None else self.enum.Value(self.prefix + name.upper())

    def names(self) -> list[str]:
        """Every lower-case name the contract has (UNSPECIFIED aside), in value order."""
        return [v.name.removeprefix(self.prefix).lower() for v in self.enum.DESCRIPTOR.values if v.number != 0]


TASK_TYPE = ProtoEnum(common_pb2.TaskType, "TASK_TYPE_", "task_type")
ENSEMBLE_STRATEGY = ProtoEnum(gateway_pb2.EnsembleStrategy, "ENSEMBLE_STRATEGY_", "strategy")
"""Served ensemble strategies: the names of :data:`avengers.core.ensemble.STRATEGIES`, one value each (a test
checks that every registered strategy has one)."""
ROUTING_STRATEGY = ProtoEnum(router_pb2.RoutingStrategy, "ROUTING_STRATEGY_", "routing")
VOTE_METHOD = ProtoEnum(voter_pb2.VoteMethod, "VOTE_METHOD_", "vote_method")
