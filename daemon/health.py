"""``grpc.health.v1``: SERVING while the daemon takes sessions, NOT_SERVING once it drains."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ..proto import mpd_pb2

SERVICE_NAME = mpd_pb2.DESCRIPTOR.services_by_name["MultiPassDedup"].full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class HealthReporter:
    """The health service of one daemon, for the whole server ("") and the MultiPassDedup service."""

    def __init__(self) -> None:
        self.servicer = health.HealthServicer(experimental_non_blocking=True)
        self.set(health_pb2.HealthCheckResponse.NOT_SERVING)

    def add_to(self, server: grpc.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    def set(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            self.servicer.set(name, status)

    def serving(self) -> None:
        self.set(health_pb2.HealthCheckResponse.SERVING)

    def draining(self) -> None:
        """NOT_SERVING from now on (watchers are told; later ``set`` calls are ignored)."""
        self.servicer.enter_graceful_shutdown()
