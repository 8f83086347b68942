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
from typing import Any

import pyrevm
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import function_signature_to_4byte_selector, keccak, to_checksum_address
from web3 import Web3

from .errors import ChainError, ConfigError, StateStale

log = logging.getLogger("sealgate.chain")

ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = ROOT / "contracts" / "build"
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
EVM_SPEC = "Cancun"  # case-sensitive in pyrevm; matches the compile script's evmVersion

# anvil's well-known development keys (mnemonic "test test ... junk"): local stack only
DEV_KEYS = {
    "deployer": "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "anchorer": "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "governor": "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
}

DECISIONS = ("DENY", "ALLOW", "REQUIRE_APPROVAL")


@functools.lru_cache(maxsize=8192)
def text_id(text: str) -> bytes:
    """bytes32 id of a name (agent SPIFFE ID, action type, target, role): keccak256(utf8).

    Cached: the decision path hashes the same few names over and over (~60 us each uncached).
    """
    return keccak(text.encode("utf-8"))


def artifact(name: str) -> dict[str, Any]:
    path = BUILD_DIR / f"{name}.json"
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
    return keccak(name.encode("ascii"))


# ---------------------------------------------------------------- deployment


@dataclass(frozen=True)
class Manifest:
    chain_id: int
    rpc_url: str
    deploy_block: int
    registry: str
    policy: str
    anchor: str

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> "Manifest":
        try:
            raw = json.loads(Path(path).read_text())
            return cls(**raw)
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
        except ChainError:
            raise
        except Exception as e:  # web3 raises many unrelated types; one boundary here
            raise ChainError(f"transaction from {account.address} failed: {describe_revert(e)}") from e
        if receipt.status != 1:
            raise ChainError(f"transaction {tx_hash.hex()} reverted in block {receipt.blockNumber}")
        return receipt

    def deploy(self, account: LocalAccount, name: str, *args: Any) -> str:
        art = artifact(name)
        factory = self.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        return self.transact(account, factory.constructor(*args)).contractAddress


def deploy_all(rpc_url: str, manifest_path: str | Path, keys: dict[str, str] = DEV_KEYS) -> Manifest:
    """Deploys registry, policy and anchor, grants roles; reuses a manifest whose code is live."""
    client = ChainClient(rpc_url)
    path = Path(manifest_path)
    if path.exists():
        existing = Manifest.load(path)
        live = all(client.w3.eth.get_code(to_checksum_address(a)) for a in (existing.registry, existing.policy, existing.anchor))
        if existing.chain_id == client.w3.eth.chain_id and live:
            return existing
    deployer = Account.from_key(keys["deployer"])
    anchorer = Account.from_key(keys["anchorer"])
    governor = Account.from_key(keys["governor"])
    registry_addr = client.deploy(deployer, "AgentRegistry", deployer.address)
    policy_addr = client.deploy(deployer, "RuleBasedPolicy", deployer.address, registry_addr)
    anchor_addr = client.deploy(deployer, "SaeAnchor", deployer.address)
    registry = client.contract("AgentRegistry", registry_addr)
    policy = client.contract("RuleBasedPolicy", policy_addr)
    anchor = client.contract("SaeAnchor", anchor_addr)
    for contract, role in (
        (registry, "REGISTRAR_ROLE"),
        (registry, "GUARDIAN_ROLE"),
        (policy, "POLICY_ADMIN_ROLE"),
        (policy, "GUARDIAN_ROLE"),
    ):
        client.transact(deployer, contract.functions.grantRole(role_id(role), governor.address))
    receipt = client.transact(deployer, anchor.functions.grantRole(role_id("ANCHORER_ROLE"), anchorer.address))
    manifest = Manifest(
        chain_id=client.w3.eth.chain_id,
        rpc_url=rpc_url,
        deploy_block=receipt.blockNumber,
        registry=registry_addr,
        policy=policy_addr,
        anchor=anchor_addr,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(manifest.to_json())
    return manifest


# ---------------------------------------------------------------- pinned policy


@dataclass(frozen=True)
class PolicyAction:
    agent_id: bytes
    action_type: bytes
    target: bytes
    amount: int
    data_class: int


@dataclass(frozen=True)
class Verdict:
    decision: str  # DENY | ALLOW | REQUIRE_APPROVAL
    reason: str
    model_hash: bytes
    block: int


_EVALUATE_SELECTOR = function_signature_to_4byte_selector("evaluate((bytes32,bytes32,bytes32,uint256,uint8))")


def encode_evaluate(action: PolicyAction) -> bytes:
    """ABI encoding of evaluate(Action): a static tuple is five 32-byte words in order.

    Written out because eth_abi costs ~85 us per call on the decision path; the unit
    tests check it byte for byte against eth_abi.
    """
    for word in (action.agent_id, action.action_type, action.target):
        if len(word) != 32:
            raise ChainError(f"bytes32 field has {len(word)} bytes")
    if not 0 <= action.amount < 2**256 or not 0 <= action.data_class < 256:
        raise ChainError("amount or data class out of ABI range")
    return b"".join((_EVALUATE_SELECTOR, action.agent_id, action.action_type, action.target,
                     action.amount.to_bytes(32, "big"), action.data_class.to_bytes(32, "big")))


def decode_verdict(output: bytes, block: int) -> Verdict:
    """Decodes (uint8 decision, bytes32 reason, bytes32 modelHash); rejects anything else."""
    if len(output) != 96:
        raise ChainError(f"evaluate returned {len(output)} bytes, expected 96")
    decision = int.from_bytes(output[:32], "big")
    if decision >= len(DECISIONS):
        raise ChainError(f"evaluate returned decision {decision}, expected 0..2")
    reason_raw = output[32:64].rstrip(b"\x00")
    if not reason_raw or not all(c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ_" for c in reason_raw):
        raise ChainError(f"evaluate returned a reason that is not an upper-case code: {output[32:64].hex()}")
    return Verdict(DECISIONS[decision], reason_raw.decode("ascii"), output[64:96], block)


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
    """Runs `evaluate` in pyrevm against state pinned at a block; follows new blocks.

    A background thread polls the head; on a new block it forks a fresh EVM at
    that block, warms it with recent calls (so their storage is fetched off the
    decision path) and swaps it in atomically. When the head cannot be confirmed
    for `max_age_seconds`, evaluate raises StateStale (fail closed).
    """

    WARM_CALLS = 32

    def __init__(self, rpc_url: str, policy_address: str, *, watch: tuple[str, ...] = (), poll_seconds: float = 0.2,
                 max_age_seconds: float = 15.0):
        self._rpc_url = rpc_url
        self._policy = to_checksum_address(policy_address)
        # contracts whose state the policy reads; each of their state changes emits an event
        self._watched = [self._policy, *(to_checksum_address(a) for a in watch)]
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
    def policy_address(self) -> str:
        return self._policy

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

    def _call(self, pinned: _Pinned, calldata: bytes) -> bytes:
        with pinned.lock:
            try:
                return bytes(pinned.evm.message_call(ZERO_ADDRESS, self._policy, calldata, is_static=True))
            except BaseException as e:
                raise ChainError(f"evaluate failed at block {pinned.block}: {e}") from e

    def evaluate(self, action: PolicyAction) -> Verdict:
        pinned = self._pinned
        if pinned is None:
            raise StateStale("no policy state pinned yet")
        age = time.monotonic() - pinned.checked_at
        if age > self._max_age:
            raise StateStale(f"pinned block {pinned.block} unconfirmed for {age:.1f}s (limit {self._max_age}s)")
        calldata = encode_evaluate(action)
        verdict = decode_verdict(self._call(pinned, calldata), pinned.block)
        warm = calldata[:100] + bytes(32) + calldata[132:]  # storage read depends on who/what, not the amount
        with self._recent_lock:
            self._recent[warm] = None
            self._recent.move_to_end(warm)
            if len(self._recent) > self.WARM_CALLS:
                self._recent.popitem(last=False)
        return verdict
