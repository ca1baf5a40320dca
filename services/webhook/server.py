"""The webhook service's gRPC servicers."""

from __future__ import annotations

import grpc

from services.common.auth import AuthPolicy
from services.common.server import ServiceSpec
from services.common.service_main import run_service
from services.common.settings import Settings


def build_spec(settings: Settings) -> ServiceSpec:
    """The webhook service's servicers and their auth policies."""

    def register(server: grpc.aio.Server) -> None:
        """Nothing yet: the servicers land with the webhook issue."""

    return ServiceSpec(
        name="webhook",
        register=register,
        service_names=[
            "paymesh.webhook.v1.WebhookService",
            "paymesh.webhook.v1.WebhookInternalService",
        ],
        policies={"paymesh.webhook.v1.WebhookService": AuthPolicy.SECRET_KEY},
    )


def main() -> None:
    """Runs the webhook service until SIGTERM."""
    run_service("webhook", build_spec, needs_api_keys=True)


if __name__ == "__main__":
    main()
