"""The router gRPC service."""
