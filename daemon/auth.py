"""Who is calling: bearer-token checks (a gRPC interceptor) and the identity the scheduler shares the device by."""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NoReturn

import grpc

from ..proto.wire import AUTH_HEADER, USER_HEADER
from .errors import TokenFileError

SHARED_USER = ""  # tokens-file entries map tokens to names; the shared token maps to no name
# Health checks answer without a token so that probes and service managers need no secret.
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)
_DECLARED_NAME = re.compile(r"[^A-Za-z0-9._@+-]")




def read_tokens_file(path: Path) -> dict[str, str]:
    """``user token`` per line (``#`` comments, blank lines ignored) -> {token: user}."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise TokenFileError(f"cannot read tokens file {path}: {e.strerror}") from None
    tokens: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2:
            raise TokenFileError(f"{path}:{n}: expected 'user token', got {len(fields)} field(s)")
        user, token = fields
        if token in tokens:
            raise TokenFileError(f"{path}:{n}: {user!r} has the same token as {tokens[token]!r}")
        tokens[token] = user
    return tokens


def peer_host(peer: str) -> str:
    """gRPC peer text (``ipv4:127.0.0.1:5555``, ``ipv6:[::1]:5555``, ``unix:...``) without the port."""
    kind, _, rest = peer.partition(":")
    if kind == "unix":
        return "unix"
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    return peer


class Authenticator:
    """Checks the bearer token of a call and names its user.

    With a tokens file, the token's entry names the user (verified). Otherwise (one shared
    token, or none on loopback) the user is what the client declares in ``mpd-user`` (default:
    its login name) at its peer host, else the peer host: a fairness key, not a proof.
    """

    def __init__(self, shared_token: str | None = None, user_tokens: Mapping[str, str] | None = None) -> None:
        self.tokens: dict[str, str] = dict(user_tokens or {})
        if shared_token:
            self.tokens.setdefault(shared_token, SHARED_USER)

    @property
    def required(self) -> bool:
        return bool(self.tokens)

    def check(self, metadata: Mapping[str, str]) -> tuple[bool, str]:
        """(accepted, reason or token's user name)."""
        if not self.required:
            return True, SHARED_USER
        header = metadata.get(AUTH_HEADER, "")
        if not header:
            return False, ("this daemon requires a token: give it with --token or $MPD_TOKEN (other gRPC clients: "
                           "metadata 'authorization: Bearer <token>')")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False, "malformed authorization metadata; expected 'Bearer <token>'"
        found = None
        for known, user in self.tokens.items():  # compare every entry: timing does not reveal which matched
            if hmac.compare_digest(known.encode(), token.strip().encode()):
                found = user
        if found is None:
            return False, "wrong token: check --token or $MPD_TOKEN"
        return True, found

    def identify(self, metadata: Mapping[str, str], peer: str) -> str:
        """The user a call belongs to, for fair sharing and logs."""
        ok, name = self.check(metadata)
        if ok and name:
            return name
        host = peer_host(peer)
        declared = _DECLARED_NAME.sub("", metadata.get(USER_HEADER, ""))[:64]
        return f"{declared}@{host}" if declared else host


class AuthInterceptor(grpc.ServerInterceptor):
    """Refuses calls without a valid token with UNAUTHENTICATED (health checks stay open)."""

    def __init__(self, authenticator: Authenticator, on_denied: Callable[[str], None] | None = None) -> None:
        self.authenticator = authenticator
        self.on_denied = on_denied

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method or ""
        if not self.authenticator.required or method.startswith(OPEN_METHOD_PREFIXES):
            return continuation(handler_call_details)
        ok, reason = self.authenticator.check(dict(handler_call_details.invocation_metadata or ()))
        if ok:
            return continuation(handler_call_details)
        if self.on_denied is not None:
            self.on_denied(reason)
        handler = continuation(handler_call_details)
        return None if handler is None else _denying_handler(handler, reason)


def _denying_handler(handler: grpc.RpcMethodHandler, reason: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that ends the call with UNAUTHENTICATED."""

    def deny(request: object, context: grpc.ServicerContext) -> NoReturn:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

    kwargs = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny, **kwargs)
    return grpc.unary_unary_rpc_method_handler(deny, **kwargs)
