"""One error root for the package; untrusted-input errors kept apart from transport errors."""

from __future__ import annotations


class SealgateError(Exception):
    """Root of every error raised by sealgate."""


class ConfigError(SealgateError):
    """Configuration is invalid; raised once, at load."""


class UsageError(ConfigError):
    """The command line is wrong or its input unreadable: exit 2 with a message, nothing was checked."""


class InputRejected(SealgateError):
    """Untrusted input (a request, an SAE, a proof) failed validation.

    Carries the stable reason code that ends up in the signed denial.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


class SaeInvalid(InputRejected):
    """An SAE or denial record failed verification."""


class ChainError(SealgateError):
    """The chain (RPC node, local EVM) could not answer."""


class StateStale(ChainError):
    """Pinned chain state is older than the configured limit."""


class StateNotCached(ChainError):
    """The pinned EVM lacks state this call reads; `PinnedPolicy.fetch(this)` fetches it (off the event loop)."""

    def __init__(self, to: str, calldata: bytes, block: int):
        super().__init__(f"state for a call to {to} is not cached at block {block}")
        self.to, self.calldata, self.block = to, calldata, block


class AnchorError(SealgateError):
    """Anchoring store or anchor transaction failed."""


class SigningError(SealgateError):
    """The signer (file key or HSM) could not sign; the answer is an unsigned denial."""
