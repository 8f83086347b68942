"""An ext_authz gRPC server (grpc.aio) on its own event-loop thread: the authorizer's and the PEP verifier's.

One loop thread, no thread-pool handoff per RPC: under load the sync server's handoffs and GIL convoys cost
more CPU than the decision itself. Listens on `unix:/path` (mode 0600 once bound, so only its user can
connect) or `host:port`, with server credentials when given.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc

UNIX_SOCKET_MODE = 0o600


class ExtAuthzServer:
    def __init__(self, servicer: Any, address: str, credentials: grpc.ServerCredentials | None = None,
                 name: str = "sealgate-grpc"):
        self._servicer = servicer
        self._address = address
        self._credentials = credentials
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._server: grpc.aio.Server | None = None

    @property
    def unix_path(self) -> str | None:
        return self._address.removeprefix("unix:") if self._address.startswith("unix:") else None

    async def _start(self) -> int:
        self._server = grpc.aio.server()
        auth_grpc.add_AuthorizationServicer_to_server(self._servicer, self._server)
        path = self.unix_path
        if path is not None and os.path.exists(path):
            os.unlink(path)  # a socket left by a killed predecessor
        if self._credentials is not None:
            port = self._server.add_secure_port(self._address, self._credentials)
        else:
            port = self._server.add_insecure_port(self._address)
        if port == 0:
            raise OSError(f"cannot bind gRPC address {self._address}")
        if path is not None:
            os.chmod(path, UNIX_SOCKET_MODE)
        await self._server.start()
        return int(port)

    def start(self) -> int:
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)

    def stop(self, grace: float = 2.0) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(grace), self._loop).result(timeout=grace + 5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
