"""Bearer-token authentication, as a server interceptor: nlu.v1 calls must carry
`authorization: Bearer <token>` with one of the configured tokens (`service.tokens`); health and
reflection never need one (kubelet probes carry none)."""

from __future__ import annotations

import grpc

from service.grpc_api.interceptors import RpcInterceptor
from service.tokens import TokenStore


def bearer_token(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value.removeprefix("Bearer ").strip()
    return None


class Authentication(RpcInterceptor):
    def __init__(self, tokens: TokenStore) -> None:
        self.tokens = tokens

    def check(self, context: grpc.aio.ServicerContext) -> None:
        self.tokens.check(bearer_token(context), "`authorization: Bearer <token>` metadata")

    async def unary(self, method, context, call):
        self.check(context)
        return await call()

    async def stream(self, method, context, responses):
        self.check(context)
        async for response in responses:
            yield response


def authentication(tokens: TokenStore | None) -> Authentication | None:
    """The interceptor, or None when no token is configured (no authentication)."""
    return Authentication(tokens) if tokens is not None else None
