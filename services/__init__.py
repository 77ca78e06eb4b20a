"""gRPC services, each a thin shell over the core library."""
