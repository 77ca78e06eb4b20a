"""The gateway gRPC service."""
