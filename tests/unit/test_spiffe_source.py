"""SVIDs from a SPIFFE Workload API (pki/spiffe_source.py) through the `spiffe` package's client.

No SPIRE agent runs in CI: the Workload API here is the SPIFFE protocol (the package's own protos, gRPC on a
Unix socket, the `workload.spiffe.io` header a SPIRE agent requires) answered with SVIDs from our PKI, and it
pushes a rotation as SPIRE does. What is tested is our side: the client's answers become the files Envoy and
the agent read."""

import threading
import time
from concurrent import futures

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from spiffe._proto import workload_pb2, workload_pb2_grpc

from ext_authz.pki.ca import KeySpec, init_pki
from ext_authz.pki.spiffe_source import SvidWriter, fetch_once, watch, workload_api_socket

TD = "sealgate.local"
AGENT = f"spiffe://{TD}/agent/procurement-01"


class WorkloadApi(workload_pb2_grpc.SpiffeWorkloadAPIServicer):
    def __init__(self, ca):
        self.ca, self.rotate, self.closing = ca, threading.Event(), threading.Event()

    def _response(self):
        issued = self.ca.issue_agent(AGENT)
        chain = b"".join(c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(issued.chain_pem))
        key = serialization.load_pem_private_key(issued.key_pem, None).private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        svid = workload_pb2.X509SVID(spiffe_id=AGENT, x509_svid=chain, x509_svid_key=key,
                                     bundle=self.ca.root.public_bytes(serialization.Encoding.DER))
        return workload_pb2.X509SVIDResponse(svids=[svid]), issued.serial

    def FetchX509SVID(self, request, context):  # noqa: N802
        if ("workload.spiffe.io", "true") not in context.invocation_metadata():
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "security header missing")
        response, self.serial = self._response()
        yield response
        if self.rotate.wait(10) and not self.closing.is_set():  # SPIRE pushes the rotated SVID on the open stream
            response, self.serial = self._response()
            yield response
        time.sleep(2)


@pytest.fixture
def workload_api(tmp_path):
    ca = init_pki(tmp_path / "pki", TD, root=KeySpec(file="r.seed"), intermediate=KeySpec(file="i.seed"))
    servicer = WorkloadApi(ca)
    server = grpc.server(futures.ThreadPoolExecutor(4))
    workload_pb2_grpc.add_SpiffeWorkloadAPIServicer_to_server(servicer, server)
    socket = tmp_path / "agent.sock"
    server.add_insecure_port(f"unix:{socket}")
    server.start()
    yield servicer, f"unix:{socket}"
    # a handler still waiting must not issue from a closed CA (it did, from grpc's thread: a segfault in sqlite)
    servicer.closing.set()
    servicer.rotate.set()
    server.stop(0).wait(10)
    ca.close()


def test_no_socket_means_the_built_in_pki(tmp_path, monkeypatch):
    monkeypatch.delenv("SPIFFE_ENDPOINT_SOCKET", raising=False)
    assert workload_api_socket() is None
    assert workload_api_socket(f"unix:{tmp_path / 'absent.sock'}") is None
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", f"unix://{tmp_path / 'absent.sock'}")
    assert workload_api_socket() is None


def test_the_svid_from_the_workload_api_is_written_for_envoy_and_the_agent(workload_api, tmp_path):
    servicer, socket = workload_api
    assert workload_api_socket(socket) == socket
    writer = SvidWriter(tmp_path / "out", "agent")
    fetch_once(socket, writer)
    leaf, intermediate = x509.load_pem_x509_certificates((tmp_path / "out" / "agent.crt").read_bytes())
    root = x509.load_pem_x509_certificate((tmp_path / "out" / "agent.bundle.pem").read_bytes())
    leaf.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)
    assert writer.spiffe_id == AGENT and leaf.serial_number == servicer.serial
    key = serialization.load_pem_private_key((tmp_path / "out" / "agent.key").read_bytes(), None)
    assert key.public_key() == leaf.public_key() and (tmp_path / "out" / "agent.key").stat().st_mode & 0o777 == 0o600
    assert "tls_certificate" in (tmp_path / "out" / "agent.sds.json").read_text()


def test_a_rotation_pushed_by_the_workload_api_replaces_the_files(workload_api, tmp_path):
    servicer, socket = workload_api
    writer = SvidWriter(tmp_path / "out", "agent")
    client, handle = watch(socket, writer)
    try:
        assert writer.updated.wait(10)
        first = servicer.serial
        writer.updated.clear()
        servicer.rotate.set()
        assert writer.updated.wait(10), writer.error
        leaf = x509.load_pem_x509_certificates((tmp_path / "out" / "agent.crt").read_bytes())[0]
        assert leaf.serial_number == servicer.serial != first and writer.updates == 2
    finally:
        handle.cancel()
        client.close()
