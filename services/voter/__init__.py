"""The voter gRPC service."""
