"""TLS, mutual TLS and bearer-token authentication for the gRPC services, server side and client side.

Server side (from :class:`~avengers.config.server.ServerConfig`, applied by ``start_server``):

- ``tls_cert_file`` + ``tls_key_file``: the port accepts TLS only; with ``tls_client_ca_file`` also mutual
  TLS (a client without a certificate signed by that CA is refused during the handshake).
- ``auth_token_env``: the name of an environment variable holding the token (or several, comma-separated,
  while rotating); every call must carry ``authorization: Bearer <token>`` or ends with UNAUTHENTICATED.
  Tokens are compared in constant time. Health checks are exempt so probes keep working.

Client side: :func:`channel_credentials`, :func:`token_call_credentials`, :func:`auth_metadata` and
:func:`open_channel`, which also adds the tracing interceptors. CLI commands add the same options with
:func:`add_client_security_arguments` and open channels with :func:`channel_from_args`.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from avengers.config.server import ServerConfig
from avengers.observability.interception import refusing_handler, split_method
from avengers.observability.tracing import client_interceptors

log = logging.getLogger(__name__)

AUTH_METADATA_KEY = "authorization"
AUTH_EXEMPT_SERVICES = frozenset({"grpc.health.v1.Health"})
"""Services callable without a token: Kubernetes probes and load balancers check health unauthenticated."""

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def read_pem(path: str | Path, what: str) -> bytes:
    """The bytes of a PEM file; FileNotFoundError / ValueError naming ``what`` and the path."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{what} file not found: {file}")
    data = file.read_bytes()
    if b"-----BEGIN " not in data:
        raise ValueError(f"{what} file {file} is not PEM (no '-----BEGIN' line)")
    return data


# ---------------------------------------------------------------------------------------------- server side


def server_credentials(
    cert_file: str | Path, key_file: str | Path, client_ca_file: str | Path | None = None
) -> grpc.ServerCredentials:
    """TLS credentials from PEM files; with ``client_ca_file`` clients must present a certificate it signed."""
    pair = (read_pem(key_file, "TLS key"), read_pem(cert_file, "TLS certificate"))
    if client_ca_file is None:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials(
        [pair], root_certificates=read_pem(client_ca_file, "client CA"), require_client_auth=True
    )


def tokens_from_env(env_name: str) -> tuple[str, ...]:
    """The token(s) in ``$env_name`` (comma-separated); ValueError if it is unset or empty.

    A server configured for token auth without a token refuses to start rather than run open.
    """
    raw = os.environ.get(env_name, "")
    tokens = tuple(t.strip() for t in raw.split(",") if t.strip())
    if not tokens:
        raise ValueError(f"token auth is configured (auth_token_env={env_name!r}) but ${env_name} is unset or empty")
    return tokens


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without ``authorization: Bearer <one of tokens>`` with UNAUTHENTICATED and a message."""

    MISSING = "missing credentials: send metadata 'authorization: Bearer <token>'"
    MALFORMED = "malformed authorization metadata: expected 'Bearer <token>'"
    INVALID = "invalid token"

    def __init__(self, tokens: Sequence[str], exempt_services: frozenset[str] = AUTH_EXEMPT_SERVICES):
        if not tokens or any(not t for t in tokens):
            raise ValueError("token auth needs at least one non-empty token")
        self._tokens = tuple(t.encode() for t in tokens)
        self._exempt = exempt_services
        self._refusals: dict[tuple[str, str], grpc.RpcMethodHandler | None] = {}

    def problem(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
        """Why the call's metadata does not authenticate it, or None if it does."""
        values = [v for k, v in metadata or () if k == AUTH_METADATA_KEY]
        if not values:
            return self.MISSING
        value = values[0] if isinstance(values[0], str) else values[0].decode("utf-8", "replace")
        scheme, _, token = value.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return self.MALFORMED
        presented = token.encode()
        matched = False
        for expected in self._tokens:  # no early exit: the time taken does not tell which token is close
            matched |= hmac.compare_digest(expected, presented)
        return None if matched else self.INVALID

    async def intercept_service(self, continuation, handler_call_details: grpc.HandlerCallDetails):
        if split_method(handler_call_details.method)[0] in self._exempt:
            return await continuation(handler_call_details)
        problem = self.problem(handler_call_details.invocation_metadata)
        handler = await continuation(handler_call_details)
        if problem is None or handler is None:
            return handler
        log.debug("refused %s: %s", handler_call_details.method, problem)
        key = (handler_call_details.method, problem)
        if key not in self._refusals:
            self._refusals[key] = refusing_handler(handler, grpc.StatusCode.UNAUTHENTICATED, problem)
        return self._refusals[key]


@dataclass
class ServerSecurity:
    """What a server needs for its config's security settings."""

    credentials: grpc.ServerCredentials | None = None
    """TLS credentials for the port, or None for plaintext."""
    interceptors: list[grpc.aio.ServerInterceptor] = field(default_factory=list)
    description: str = "plaintext, no auth"


def server_security(config: ServerConfig) -> ServerSecurity:
    """Credentials and interceptors for ``config``; files and tokens are read now, so mistakes fail at start."""
    security = ServerSecurity()
    parts = []
    if config.tls_cert_file and config.tls_key_file:
        security.credentials = server_credentials(config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file)
        parts.append("mutual TLS" if config.tls_client_ca_file else "TLS")
    else:
        parts.append("plaintext")
    if config.auth_token_env:
        security.interceptors.append(TokenAuthInterceptor(tokens_from_env(config.auth_token_env)))
        parts.append(f"bearer token from ${config.auth_token_env}")
    else:
        parts.append("no auth")
    security.description = ", ".join(parts)
    return security


# ---------------------------------------------------------------------------------------------- client side


def channel_credentials(
    root_ca_file: str | Path | None = None, cert_file: str | Path | None = None, key_file: str | Path | None = None
) -> grpc.ChannelCredentials:
    """TLS channel credentials: trust ``root_ca_file`` (default: the system roots); with ``cert_file`` and
    ``key_file`` the client presents a certificate (mutual TLS)."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("client certificate and key go together: give both or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(root_ca_file, "CA") if root_ca_file else None,
        private_key=read_pem(key_file, "client key") if key_file else None,
        certificate_chain=read_pem(cert_file, "client certificate") if cert_file else None,
    )


def token_call_credentials(token: str) -> grpc.CallCredentials:
    """Call credentials sending ``authorization: Bearer <token>`` (gRPC sends them over TLS channels only)."""
    return grpc.access_token_call_credentials(token)


def auth_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Per-call metadata carrying ``token``, for plaintext channels (behind a mesh that encrypts)."""
    return ((AUTH_METADATA_KEY, f"Bearer {token}"),)


def _with_metadata(details: grpc.aio.ClientCallDetails, extra: tuple[tuple[str, str], ...]) -> grpc.aio.ClientCallDetails:
    return details._replace(metadata=grpc.aio.Metadata.from_tuple(tuple(details.metadata or ()) + extra))


class _TokenUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, extra: tuple[tuple[str, str], ...]):
        self.extra = extra

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(_with_metadata(client_call_details, self.extra), request)


class _TokenUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, extra: tuple[tuple[str, str], ...]):
        self.extra = extra

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(_with_metadata(client_call_details, self.extra), request)


class _TokenStreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, extra: tuple[tuple[str, str], ...]):
        self.extra = extra

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return await continuation(_with_metadata(client_call_details, self.extra), request_iterator)


class _TokenStreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, extra: tuple[tuple[str, str], ...]):
        self.extra = extra

    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return await continuation(_with_metadata(client_call_details, self.extra), request_iterator)


def token_interceptors(token: str) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors adding the token to every call's metadata, of every kind (plaintext channels, where gRPC
    refuses call credentials)."""
    extra = auth_metadata(token)
    return [_TokenUnaryUnary(extra), _TokenUnaryStream(extra), _TokenStreamUnary(extra), _TokenStreamStream(extra)]


def open_channel(
    address: str,
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    credentials: grpc.ChannelCredentials | None = None,
    token: str | None = None,
    options: Sequence[tuple[str, object]] = (),
) -> grpc.aio.Channel:
    """An aio channel to ``address`` with size limits, tracing and optional TLS (``credentials``) and token.

    Over TLS the token travels as call credentials; over plaintext as per-call metadata.
    """
    all_options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        *options,
    ]
    interceptors: list[grpc.aio.ClientInterceptor] = client_interceptors()
    if credentials is not None:
        if token:
            credentials = grpc.composite_channel_credentials(credentials, token_call_credentials(token))
        return grpc.aio.secure_channel(address, credentials, options=all_options, interceptors=interceptors or None)
    if token:
        interceptors += token_interceptors(token)
    return grpc.aio.insecure_channel(address, options=all_options, interceptors=interceptors or None)


def add_client_security_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tls``, ``--tls-ca``, ``--tls-cert``, ``--tls-key``, ``--token-env`` for commands that call a service."""
    group = parser.add_argument_group("connection security")
    group.add_argument("--tls", action="store_true", help="connect with TLS (system roots unless --tls-ca)")
    group.add_argument("--tls-ca", metavar="PEM", help="CA bundle that signed the server certificate (implies --tls)")
    group.add_argument("--tls-cert", metavar="PEM", help="client certificate, for mutual TLS (implies --tls)")
    group.add_argument("--tls-key", metavar="PEM", help="key of --tls-cert")
    group.add_argument(
        "--token-env", metavar="VAR", help="environment variable holding the bearer token to send (never the token itself)"
    )


def channel_from_args(args: argparse.Namespace, address: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES):
    """A channel to ``address`` with the security options of :func:`add_client_security_arguments`."""
    credentials = None
    if args.tls or args.tls_ca or args.tls_cert:
        credentials = channel_credentials(args.tls_ca, args.tls_cert, args.tls_key)
    token = None
    if args.token_env:
        token = os.environ.get(args.token_env, "").strip()
        if not token:
            raise ValueError(f"--token-env {args.token_env}: the variable is unset or empty")
    return open_channel(address, max_message_bytes=max_message_bytes, credentials=credentials, token=token)
