"""gRPC plumbing shared by every service: server lifecycle, error mapping, client channels."""
