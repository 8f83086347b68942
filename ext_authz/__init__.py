"""Sealgate authorizer and trust core: Envoy ext_authz -> identity -> on-chain policy -> SAE."""

__version__ = "0.1.0"
