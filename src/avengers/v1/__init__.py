"""Generated protobuf and gRPC code of proto/avengers/v1 (do not edit; run scripts/gen_protos.py)."""
