"""The admin service: operators, merchants and keys, and API-key resolution for the others."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from paymesh.admin.v1 import admin_internal_pb2, admin_internal_pb2_grpc
from sqlalchemy.orm import Session, sessionmaker

from services.admin import merchants
from services.common.db import make_engine, make_sessionmaker, transaction
from services.common.errors import Unauthenticated
from services.common.server import ServiceSpec
from services.common.service_main import run_service
from services.common.settings import Settings


class AuthInternalServicer(admin_internal_pb2_grpc.AuthInternalServiceServicer):
    """Resolves API keys for the other services."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def _authenticate(self, key: str) -> admin_internal_pb2.Principal:
        with transaction(self._sessions) as session:
            found = merchants.authenticate_api_key(session, key)
            if found is None:
                raise Unauthenticated("the API key is unknown or revoked")
            api_key, merchant = found
            return admin_internal_pb2.Principal(
                merchant_id=merchant.id,
                mode=api_key.mode,
                kind=api_key.kind,
                key_id=api_key.id,
                fee_bps=merchant.fee_bps,
                fee_fixed=merchant.fee_fixed,
                merchant_name=merchant.name,
            )

    async def AuthenticateApiKey(
        self,
        request: admin_internal_pb2.AuthenticateApiKeyRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> admin_internal_pb2.Principal:
        """Resolves one key."""
        return await asyncio.to_thread(self._authenticate, request.key)


def build_spec(settings: Settings) -> ServiceSpec:
    """The admin service's servicers and their auth policies."""
    sessions = make_sessionmaker(
        make_engine(
            settings.require_database_url(),
            pool_size=settings.db_pool_size,
            application_name="paymesh-admin",
        )
    )

    def register(server: grpc.aio.Server) -> None:
        admin_internal_pb2_grpc.add_AuthInternalServiceServicer_to_server(
            AuthInternalServicer(sessions), server
        )

    return ServiceSpec(
        name="admin",
        register=register,
        service_names=["paymesh.admin.v1.AuthInternalService", "paymesh.admin.v1.AdminService"],
    )


def main() -> None:
    """Runs the admin service until SIGTERM."""
    run_service("admin", build_spec, needs_api_keys=False)


if __name__ == "__main__":
    main()
