"""The `main()` every gRPC service shares: settings, logs, auth, then serve until stopped."""

from __future__ import annotations

from collections.abc import Callable

import uvloop

from services.common import tracing
from services.common.auth import ApiKeyAuthenticator
from services.common.clients import aio_channel
from services.common.logs import configure_logging
from services.common.ratelimit import ApiRateLimiter
from services.common.server import ServiceSpec, run_server
from services.common.settings import ServiceName, Settings


def run_service(
    name: ServiceName,
    build_spec: Callable[[Settings], ServiceSpec],
    *,
    needs_api_keys: bool,
) -> None:
    """Builds the service from the environment's settings and serves it."""
    settings = Settings()
    configure_logging(service=name, level=settings.log_level, json=settings.log_json)
    # Before the spec builds its channels, so they are traced.
    tracing.configure(settings.otel_endpoint, service=name)
    spec = build_spec(settings)

    async def serve() -> None:
        authenticator = None
        if needs_api_keys:
            authenticator = ApiKeyAuthenticator(
                aio_channel(settings.target("admin")),
                ttl_s=settings.auth_cache_ttl_s,
                timeout_s=settings.grpc_timeout_s,
            )
        await run_server(
            spec,
            port=settings.grpc_port(name),
            host=settings.bind_host,
            metrics_port=settings.metrics_port(name),
            grace_period_s=settings.grace_period_s,
            authenticator=authenticator,
            thread_pool_size=settings.db_pool_size,
            rate_limiter=ApiRateLimiter.from_settings(settings) if needs_api_keys else None,
        )

    # uvloop: the event loop's own per-call cost is a large share of a request (issue 13).
    uvloop.run(serve())
