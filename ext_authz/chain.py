"""Chain edge: artifacts, deployment (web3), and policy view calls on pinned state (pyrevm).

web3 is kept for deployment and transactions; the decision path runs the real
contract bytecode in pyrevm against state pinned at a block (one in-process call,
~10 us warm, versus 2-4 ms and three RPCs for web3's `.call()`).
"""

from __future__ import annotations

import functools
import http.client
import json
import logging
import urllib.parse
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pyrevm
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import function_signature_to_4byte_selector, keccak, to_checksum_address
from web3 import Web3
from web3.logs import DISCARD

from .errors import ChainError, ConfigError, StateStale

log = logging.getLogger("sealgate.chain")

ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = ROOT / "contracts" / "build"
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
EVM_SPEC = "Cancun"  # case-sensitive in pyrevm; matches the compile script's evmVersion

# anvil's development accounts (mnemonic "test test ... junk"): the local stack only.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_ROLES = {"deployer": 0, "anchorer": 1, "guardian": 2}  # owners of the Safe: accounts 3-7
DEV_OWNER_ACCOUNTS = (3, 4, 5, 6, 7)
SAFE_THRESHOLD = 3
DEFAULT_TIMELOCK_DELAY = 24 * 3600


@functools.lru_cache(maxsize=16)
def dev_account(index: int) -> LocalAccount:
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def dev_key(role: str) -> str:
    return dev_account(DEV_ROLES[role]).key.to_0x_hex()


DEV_KEYS = {role: dev_key(role) for role in DEV_ROLES}

DECISIONS = ("DENY", "ALLOW", "REQUIRE_APPROVAL")


@functools.lru_cache(maxsize=8192)
def text_id(text: str) -> bytes:
    """bytes32 id of a name (agent SPIFFE ID, action type, target, role): keccak256(utf8).

    Cached: the decision path hashes the same few names over and over (~60 us each uncached).
    """
    return keccak(text.encode("utf-8"))


SAFE_ARTIFACTS = {
    "Safe": ROOT / "node_modules/@safe-global/safe-contracts/build/artifacts/contracts/Safe.sol/Safe.json",
    "SafeProxyFactory": ROOT / "node_modules/@safe-global/safe-contracts/build/artifacts/contracts/proxies/SafeProxyFactory.sol/SafeProxyFactory.json",
}


def artifact(name: str) -> dict[str, Any]:
    path = SAFE_ARTIFACTS.get(name, BUILD_DIR / f"{name}.json")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"contract artifact {path} unreadable: {e}") from e


def _error_selectors() -> dict[str, str]:
    names = {}
    for path in BUILD_DIR.glob("*.json"):
        for item in json.loads(path.read_text())["abi"]:
            if item["type"] == "error":
                sig = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
                names["0x" + keccak(text=sig)[:4].hex()] = sig
    return names


def describe_revert(error: Exception) -> str:
    """Names the contract's custom error behind a web3 revert, when it is one of ours."""
    data = str(getattr(error, "data", "") or "")
    sig = _error_selectors().get(data[:10]) if data.startswith("0x") else None
    return f"reverted with {sig}" if sig else str(error)


def role_id(name: str) -> bytes:
    """OpenZeppelin AccessControl role id; DEFAULT_ADMIN_ROLE is 0x00, not a hash."""
    return bytes(32) if name == "DEFAULT_ADMIN_ROLE" else keccak(name.encode("ascii"))


# ---------------------------------------------------------------- deployment


@dataclass(frozen=True)
class Manifest:
    chain_id: int
    rpc_url: str
    deploy_block: int
    registry: str  # AgentRegistry
    models: str  # ModelRegistry
    policy: str  # first RuleBasedPolicy implementation
    policy_registry: str
    policy_id: str  # 0x-hex bytes32 the authorizer evaluates
    anchor: str
    timelock: str
    safe: str
    owners: tuple[str, ...]
    threshold: int
    delay_seconds: int
    guardian: str
    anchorer: str
    approvers: str  # ApproverRegistry

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, "owners": list(self.owners)}, indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> "Manifest":
        try:
            raw = json.loads(Path(path).read_text())
            return cls(**{**raw, "owners": tuple(raw["owners"])})
        except (OSError, ValueError, TypeError) as e:
            raise ConfigError(f"address manifest {path} unreadable: {e}") from e


class ChainClient:
    """Transactions signed locally with an account key; waits for the receipt."""

    def __init__(self, rpc_url: str, timeout: float = 30.0):
        self.rpc_url = rpc_url
        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
        self._nonce_lock = threading.Lock()

    def contract(self, name: str, address: str):
        return self.w3.eth.contract(address=to_checksum_address(address), abi=artifact(name)["abi"])

    def transact(self, account: LocalAccount, fn, timeout: float = 30.0) -> Any:
        try:
            with self._nonce_lock:
                tx = fn.build_transaction(
                    {
                        "from": account.address,
                        "nonce": self.w3.eth.get_transaction_count(account.address, "pending"),
                        "chainId": self.w3.eth.chain_id,
                    }
                )
                signed = account.sign_transaction(tx)
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout)
        except Exception as e:  # web3 raises many unrelated types; one boundary here
            raise ChainError(f"transaction from {account.address} failed: {describe_revert(e)}") from e
        if receipt.status != 1:
            raise ChainError(f"transaction {tx_hash.hex()} reverted in block {receipt.blockNumber}")
        return receipt

    def deploy(self, account: LocalAccount, name: str, *args: Any) -> str:
        art = artifact(name)
        factory = self.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        return self.transact(account, factory.constructor(*args)).contractAddress


POLICY_NAME = "sealgate.default"


@dataclass
class Bootstrap:
    """What a bootstrap hook may use before the deployer hands everything to the timelock."""

    client: ChainClient
    deployer: LocalAccount
    registry: Any
    models: Any
    policy: Any
    approvers: Any


def deploy_all(rpc_url: str, manifest_path: str | Path, *, delay_seconds: int = DEFAULT_TIMELOCK_DELAY,
               owners: tuple[str, ...] | None = None, threshold: int = SAFE_THRESHOLD,
               keys: dict[str, str] | None = None, bootstrap: Callable[[Bootstrap], None] | None = None) -> Manifest:
    """Deploys registries, policy, anchor, a Safe (threshold-of-owners) and a TimelockController
    proposed by that Safe; then hands every admin role to the timelock and renounces the
    deployer's. Reuses a manifest whose contracts are live on the same chain."""
    client = ChainClient(rpc_url)
    path = Path(manifest_path)
    if path.exists():
        try:
            existing = Manifest.load(path)
            addresses = (existing.registry, existing.models, existing.policy_registry, existing.anchor, existing.timelock,
                         existing.safe, existing.approvers)
            if existing.chain_id == client.w3.eth.chain_id and all(client.w3.eth.get_code(to_checksum_address(a)) for a in addresses):
                return existing
        except ConfigError:
            pass  # an older or foreign manifest: deploy afresh
    keys = keys or DEV_KEYS
    deployer, anchorer, guardian = (Account.from_key(keys[r]) for r in ("deployer", "anchorer", "guardian"))
    owners = owners or tuple(dev_account(i).address for i in DEV_OWNER_ACCOUNTS)
    if not 1 <= threshold <= len(owners):
        raise ConfigError(f"Safe threshold must be in 1..{len(owners)}, found {threshold}")

    registry = client.contract("AgentRegistry", client.deploy(deployer, "AgentRegistry", deployer.address))
    models = client.contract("ModelRegistry", client.deploy(deployer, "ModelRegistry", deployer.address))
    policy = client.contract("RuleBasedPolicy", client.deploy(deployer, "RuleBasedPolicy", deployer.address,
                                                               registry.address, models.address))
    policy_registry = client.contract("PolicyRegistry", client.deploy(deployer, "PolicyRegistry", deployer.address))
    anchor = client.contract("SaeAnchor", client.deploy(deployer, "SaeAnchor", deployer.address))
    approvers = client.contract("ApproverRegistry", client.deploy(deployer, "ApproverRegistry", deployer.address))
    safe = deploy_safe(client, deployer, owners, threshold)
    timelock = client.contract("SealgateTimelock", client.deploy(deployer, "SealgateTimelock", delay_seconds,
                                                                  [safe.address], [ZERO_ADDRESS]))

    grant = lambda contract, role, who: client.transact(deployer, contract.functions.grantRole(role_id(role), who))  # noqa: E731
    # bootstrap window: the deployer seeds, then hands over
    for contract, role in ((registry, "REGISTRAR_ROLE"), (models, "MODEL_ADMIN_ROLE"), (policy, "POLICY_ADMIN_ROLE"),
                           (policy_registry, "POLICY_ADMIN_ROLE"), (approvers, "APPROVER_ADMIN_ROLE")):
        grant(contract, role, deployer.address)
    policy_id = keccak(text=POLICY_NAME)
    client.transact(deployer, policy_registry.functions.deploy(policy_id, policy.address))
    if bootstrap is not None:
        bootstrap(Bootstrap(client, deployer, registry, models, policy, approvers))

    handover = (
        (registry, ("REGISTRAR_ROLE",), True),
        (models, ("MODEL_ADMIN_ROLE",), True),
        (policy, ("POLICY_ADMIN_ROLE",), True),
        (policy_registry, ("POLICY_ADMIN_ROLE",), False),
        (anchor, (), False),
        (approvers, ("APPROVER_ADMIN_ROLE",), True),
    )
    for contract, roles, has_guardian in handover:
        for role in roles:
            grant(contract, role, timelock.address)
        if has_guardian:
            grant(contract, "GUARDIAN_ROLE", guardian.address)
        grant(contract, "DEFAULT_ADMIN_ROLE", timelock.address)
    grant(anchor, "ANCHORER_ROLE", anchorer.address)
    for contract, roles, _ in handover:
        for role in (*roles, "DEFAULT_ADMIN_ROLE"):
            if contract.functions.hasRole(role_id(role), deployer.address).call():
                receipt = client.transact(deployer, contract.functions.renounceRole(role_id(role), deployer.address))

    manifest = Manifest(
        chain_id=client.w3.eth.chain_id, rpc_url=rpc_url, deploy_block=receipt.blockNumber,
        registry=registry.address, models=models.address, policy=policy.address,
        policy_registry=policy_registry.address, policy_id="0x" + policy_id.hex(), anchor=anchor.address,
        timelock=timelock.address, safe=safe.address, owners=tuple(owners), threshold=threshold,
        delay_seconds=delay_seconds, guardian=guardian.address, anchorer=anchorer.address, approvers=approvers.address,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(manifest.to_json())
    return manifest


def deploy_safe(client: ChainClient, deployer: LocalAccount, owners: tuple[str, ...], threshold: int) -> Any:
    """A Safe 1.4.1 proxy (singleton and factory from the audited npm build) with the given owners."""
    singleton = client.deploy(deployer, "Safe")
    factory = client.contract("SafeProxyFactory", client.deploy(deployer, "SafeProxyFactory"))
    setup = client.contract("Safe", singleton).encode_abi(
        "setup", [list(owners), threshold, ZERO_ADDRESS, b"", ZERO_ADDRESS, ZERO_ADDRESS, 0, ZERO_ADDRESS])
    receipt = client.transact(deployer, factory.functions.createProxyWithNonce(singleton, setup, 0))
    created = factory.events.ProxyCreation().process_receipt(receipt, errors=DISCARD)
    if not created:
        raise ChainError("SafeProxyFactory emitted no ProxyCreation")
    return client.contract("Safe", created[0]["args"]["proxy"])


# ---------------------------------------------------------------- pinned policy


@dataclass(frozen=True)
class PolicyAction:
    agent_id: bytes
    key_fingerprint: bytes
    action_type: bytes
    target: bytes
    amount: int
    data_class: int
    risk_score: int = 0


@dataclass(frozen=True)
class Verdict:
    decision: str  # DENY | ALLOW | REQUIRE_APPROVAL
    reason: str
    model_hash: bytes
    block: int
    implementation: str = ZERO_ADDRESS  # the policy contract that answered
    version: int = 0  # its version in the PolicyRegistry


EVALUATE_SIGNATURE = "evaluate(bytes32,(bytes32,bytes32,bytes32,bytes32,uint256,uint8,uint8))"
_EVALUATE_SELECTOR = function_signature_to_4byte_selector(EVALUATE_SIGNATURE)
_CURRENT_SELECTOR = function_signature_to_4byte_selector("current(bytes32)")
_APPROVER_KEY_SELECTOR = function_signature_to_4byte_selector("approverKey(bytes32)")


@functools.lru_cache(maxsize=4096)
def _evaluate_head(policy_id: bytes, agent_id: bytes, key_fingerprint: bytes, action_type: bytes, target: bytes) -> bytes:
    """Selector and the five bytes32 words: the same per agent, key, action and target (cached)."""
    for word in (policy_id, agent_id, key_fingerprint, action_type, target):
        if len(word) != 32:
            raise ChainError(f"bytes32 field has {len(word)} bytes")
    return b"".join((_EVALUATE_SELECTOR, policy_id, agent_id, key_fingerprint, action_type, target))


def encode_evaluate(policy_id: bytes, action: PolicyAction) -> bytes:
    """ABI encoding of PolicyRegistry.evaluate(policyId, Action): static, so eight 32-byte words.

    Written out because eth_abi costs ~85 us per call on the decision path; the unit
    tests check it byte for byte against eth_abi.
    """
    if not 0 <= action.amount < 2**256 or not 0 <= action.data_class < 256 or not 0 <= action.risk_score < 256:
        raise ChainError("amount, data class or risk score out of ABI range")
    head = _evaluate_head(policy_id, action.agent_id, action.key_fingerprint, action.action_type, action.target)
    return b"".join((head, action.amount.to_bytes(32, "big"), action.data_class.to_bytes(32, "big"),
                     action.risk_score.to_bytes(32, "big")))


@functools.lru_cache(maxsize=64)
def _checksummed(address: bytes) -> str:
    """EIP-55 form of a 20-byte address; cached: the same few implementations answer every call (~100 us uncached)."""
    return to_checksum_address(address)


@functools.lru_cache(maxsize=1024)
def decode_verdict(output: bytes, block: int) -> Verdict:
    """Decodes ((uint8 decision, bytes32 reason, bytes32 modelHash), address, uint256); rejects anything else.

    Cached: the output does not depend on the amount, so most calls return bytes seen before
    (a rejection raises and is not cached)."""
    if len(output) != 160:
        raise ChainError(f"evaluate returned {len(output)} bytes, expected 160")
    decision = int.from_bytes(output[:32], "big")
    if decision >= len(DECISIONS):
        raise ChainError(f"evaluate returned decision {decision}, expected 0..2")
    reason_raw = output[32:64].rstrip(b"\x00")
    if not reason_raw or not all(c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ_" for c in reason_raw):
        raise ChainError(f"evaluate returned a reason that is not an upper-case code: {output[32:64].hex()}")
    implementation = _checksummed(output[108:128])
    return Verdict(DECISIONS[decision], reason_raw.decode("ascii"), output[64:96], block, implementation,
                   int.from_bytes(output[128:160], "big"))


class _HeadReader:
    """Minimal JSON-RPC client for the head poll: one kept-alive connection, no web3 middleware
    (web3's get_block costs ~4 ms CPU; polling five times a second made it the idle cost)."""

    def __init__(self, rpc_url: str, timeout: float = 5.0):
        url = urllib.parse.urlsplit(rpc_url)
        if url.scheme not in ("http", "https"):
            raise ConfigError(f"RPC URL must be http(s), found {rpc_url!r}")
        self._url = url
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._id = 0

    def _rpc(self, method: str, params: list[Any]) -> Any:
        self._id += 1
        body = json.dumps({"jsonrpc": "2.0", "id": self._id, "method": method, "params": params})
        try:
            if self._conn is None:
                cls = http.client.HTTPSConnection if self._url.scheme == "https" else http.client.HTTPConnection
                self._conn = cls(self._url.hostname, self._url.port, timeout=self._timeout)
            self._conn.request("POST", self._url.path or "/", body, {"content-type": "application/json"})
            reply = json.loads(self._conn.getresponse().read())
        except (OSError, http.client.HTTPException, ValueError) as e:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            raise ChainError(f"{method} to {self._url.geturl()} failed: {e}") from e
        if not isinstance(reply, dict) or "result" not in reply or reply["result"] is None:
            raise ChainError(f"{method} to {self._url.geturl()} answered {str(reply)[:200]}")
        return reply["result"]

    def block_number(self) -> int:
        return int(self._rpc("eth_blockNumber", []), 16)

    def has_logs(self, addresses: list[str], first: int, last: int) -> bool:
        logs = self._rpc("eth_getLogs", [{"address": addresses, "fromBlock": hex(first), "toBlock": hex(last)}])
        return bool(logs)

    def block_timestamp(self, number: int) -> int:
        return int(self._rpc("eth_getBlockByNumber", [hex(number), False])["timestamp"], 16)


@dataclass
class _Pinned:
    evm: Any
    block: int
    lock: threading.Lock
    checked_at: float  # monotonic time the chain head was last confirmed equal to `block`


class PinnedPolicy:
    """Runs PolicyRegistry.evaluate in pyrevm against state pinned at a block; follows new blocks.

    A background thread polls the head; on a new block it forks a fresh EVM at
    that block, warms it with recent calls (so their storage is fetched off the
    decision path) and swaps it in atomically. When the head cannot be confirmed
    for `max_age_seconds`, evaluate raises StateStale (fail closed).
    """

    WARM_CALLS = 32

    def __init__(self, rpc_url: str, policy_registry: str, policy_id: bytes, *, watch: tuple[str, ...] = (),
                 poll_seconds: float = 0.2, max_age_seconds: float = 15.0, approvers: str | None = None):
        self._rpc_url = rpc_url
        self._registry = to_checksum_address(policy_registry)
        self._approvers = to_checksum_address(approvers) if approvers else None
        self.policy_id = policy_id
        # contracts whose state the verdict depends on; each of their state changes emits an
        # event. The current implementation is added at every pin (an upgrade logs first).
        self._static_watch = [self._registry, *(to_checksum_address(a) for a in watch)]
        self._watched = list(self._static_watch)
        self._poll = poll_seconds
        self._max_age = max_age_seconds
        self._head = _HeadReader(rpc_url)
        self._pinned: _Pinned | None = None
        self._recent: OrderedDict[bytes, None] = OrderedDict()
        self._recent_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def block(self) -> int | None:
        return self._pinned.block if self._pinned else None

    @property
    def policy_registry(self) -> str:
        return self._registry

    def age_seconds(self) -> float:
        """Seconds since the chain head was last confirmed to equal the pinned block."""
        pinned = self._pinned
        return float("inf") if pinned is None else time.monotonic() - pinned.checked_at

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._follow, name="sealgate-pin", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _pin(self, number: int, timestamp: int) -> _Pinned:
        evm = pyrevm.EVM(fork_url=self._rpc_url, fork_block=str(number), spec_id=EVM_SPEC)
        evm.set_block_env(pyrevm.BlockEnv(number=number, timestamp=timestamp))
        pinned = _Pinned(evm, number, threading.Lock(), time.monotonic())
        try:
            current = self._call(pinned, _CURRENT_SELECTOR + self.policy_id)
            self._watched = [*self._static_watch, to_checksum_address(current[12:32])]
        except ChainError:
            self._watched = list(self._static_watch)  # unknown policy id: evaluate will fail closed
        with self._recent_lock:
            warm = list(self._recent)
        for calldata in warm:
            try:
                self._call(pinned, calldata)
            except ChainError:
                pass
        return pinned

    def refresh(self) -> int:
        """Confirms the head and pins it. Returns the pinned block.

        When none of the watched contracts logged an event since the pinned block,
        their state is unchanged: the same EVM moves to the new block (block env
        only) instead of forking again, which would refetch storage over RPC.
        """
        number = self._head.block_number()
        current = self._pinned
        if current is not None and current.block == number:
            current.checked_at = time.monotonic()
            return current.block
        timestamp = self._head.block_timestamp(number)
        if current is not None and number > current.block and not self._head.has_logs(self._watched, current.block + 1, number):
            with current.lock:
                current.evm.set_block_env(pyrevm.BlockEnv(number=number, timestamp=timestamp))
            self._pinned = _Pinned(current.evm, number, current.lock, time.monotonic())
            return number
        try:
            self._pinned = self._pin(number, timestamp)
        except BaseException as e:  # pyrevm raises pyo3 panics as BaseException
            raise ChainError(f"cannot fork state at block {number}: {e}") from e
        return number

    def _follow(self) -> None:
        while not self._stop.wait(self._poll):
            try:
                self.refresh()
            except ChainError as e:
                log.warning("policy state refresh failed: %s", e)

    def _call(self, pinned: _Pinned, calldata: bytes, to: str | None = None) -> bytes:
        with pinned.lock:
            evm = pinned.evm
            try:
                checkpoint = evm.snapshot()
                try:
                    return bytes(evm.message_call(ZERO_ADDRESS, to or self._registry, calldata, is_static=True))
                finally:
                    # pyrevm leaves each call's journal frame behind (~4 entries per call, never freed
                    # while the pin lives); reverting drops it and keeps the fetched storage cached
                    evm.revert(checkpoint)
            except BaseException as e:  # pyrevm raises pyo3 panics as BaseException
                raise ChainError(f"evaluate failed at block {pinned.block}: {e}") from e

    def _fresh(self) -> _Pinned:
        pinned = self._pinned
        if pinned is None:
            raise StateStale("no policy state pinned yet")
        age = time.monotonic() - pinned.checked_at
        if age > self._max_age:
            raise StateStale(f"pinned block {pinned.block} unconfirmed for {age:.1f}s (limit {self._max_age}s)")
        return pinned

    def approver_key(self, name: str) -> bytes | None:
        """An approver's Ed25519 public key in the ApproverRegistry at the pinned block; None when
        unknown or revoked."""
        if self._approvers is None:
            return None
        out = self._call(self._fresh(), _APPROVER_KEY_SELECTOR + text_id(name), to=self._approvers)
        if len(out) != 64:
            raise ChainError(f"approverKey returned {len(out)} bytes, expected 64")
        key, active = out[:32], int.from_bytes(out[32:], "big")
        return key if active == 1 and any(key) else None

    def evaluate(self, action: PolicyAction) -> Verdict:
        pinned = self._fresh()
        calldata = encode_evaluate(self.policy_id, action)
        verdict = decode_verdict(self._call(pinned, calldata), pinned.block)
        warm = calldata[:164] + bytes(32) + calldata[196:]  # storage read depends on who/what, not the amount
        with self._recent_lock:
            self._recent[warm] = None
            self._recent.move_to_end(warm)
            if len(self._recent) > self.WARM_CALLS:
                self._recent.popitem(last=False)
        return verdict
