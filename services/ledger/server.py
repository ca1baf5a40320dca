"""The ledger service's gRPC servicers."""

from __future__ import annotations

import grpc

from services.common.auth import AuthPolicy
from services.common.server import ServiceSpec
from services.common.service_main import run_service
from services.common.settings import Settings


def build_spec(settings: Settings) -> ServiceSpec:
    """The ledger service's servicers and their auth policies."""

    def register(server: grpc.aio.Server) -> None:
        """Nothing yet: the servicers land with the ledger issue."""

    return ServiceSpec(
        name="ledger",
        register=register,
        service_names=[
            "paymesh.ledger.v1.LedgerService",
            "paymesh.ledger.v1.LedgerInternalService",
        ],
        policies={"paymesh.ledger.v1.LedgerService": AuthPolicy.SECRET_KEY},
    )


def main() -> None:
    """Runs the ledger service until SIGTERM."""
    run_service("ledger", build_spec, needs_api_keys=True)


if __name__ == "__main__":
    main()
