"""The model_pool gRPC service."""
