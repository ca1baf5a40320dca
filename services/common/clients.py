"""gRPC channels to other paymesh services, for servers (aio) and workers (sync)."""

from __future__ import annotations

import json

import grpc

from services.common import tracing

# Transient failures of idempotent internal calls are retried by the channel itself.
_SERVICE_CONFIG = json.dumps(
    {
        # Spread calls over every address the target lists (several local copies, or every
        # ready pod behind a headless Service) and skip the ones that do not answer.
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)
_OPTIONS = [
    ("grpc.service_config", _SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
    ("grpc.keepalive_time_ms", 30_000),
]


def aio_channel(target: str) -> grpc.aio.Channel:
    """An asyncio channel to `target` ("host:port"), traced when tracing is on."""
    return grpc.aio.insecure_channel(
        target, options=_OPTIONS, interceptors=tracing.aio_client_interceptors() or None
    )


def sync_channel(target: str) -> grpc.Channel:
    """A blocking channel to `target` ("host:port"), traced when tracing is on."""
    return tracing.intercept(grpc.insecure_channel(target, options=_OPTIONS))
