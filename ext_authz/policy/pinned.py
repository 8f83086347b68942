"""Policy view calls on chain state pinned at a block: the real contract bytecode run in pyrevm.

One in-process call, ~10 us warm, versus 2-4 ms and three RPCs for web3's `.call()`.

pyrevm never talks to the node itself: it fetches missing storage synchronously, with no timeout, holding the
GIL, so one uncached read during an RPC stall froze the whole authorizer for 11 s. Instead its fork URL is a
local port that refuses every connection (bound, never listening), and the state a call reads is fetched by us:
`debug_traceCall` with the `prestateTracer` at the pinned block gives every account and slot the call touches,
over our own JSON-RPC client with a deadline, off the event loop; it is inserted into the EVM, and the call runs
from memory. A read of anything not inserted fails at once (the refused connection), so a miss is exact, never a
silent zero: `evaluate` raises `StateNotCached`, the server fetches off its loop (`fetch`) and decides again, or
denies that request alone with POLICY_STATE_UNAVAILABLE when the node does not answer in time. The node must
serve `debug_traceCall` with `prestateTracer` (geth, reth, erigon, nethermind and anvil do).
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyrevm
from eth_utils import to_checksum_address

from ext_authz.errors import ChainError, ConfigError, StateNotCached, StateStale
from ext_authz.policy.abi import (
    APPROVER_KEY_SELECTOR,
    CURRENT_SELECTOR,
    ZERO_ADDRESS,
    PolicyAction,
    Verdict,
    decode_verdict,
    encode_evaluate,
    text_id,
)

log = logging.getLogger("sealgate.chain")
EVM_SPEC = "Cancun"  # case-sensitive in pyrevm; matches the compile script's evmVersion


class _HeadReader:
    """Minimal JSON-RPC client for the head poll: one kept-alive connection, no web3 middleware
    (web3's get_block costs ~4 ms CPU; polling five times a second made it the idle cost)."""

    def __init__(self, rpc_url: str, timeout: float = 5.0):
        url = urllib.parse.urlsplit(rpc_url)
        if url.scheme not in ("http", "https"):
            raise ConfigError(f"RPC URL must be http(s), found {rpc_url!r}")
        if not url.hostname:
            raise ConfigError(f"RPC URL has no host: {rpc_url!r}")
        self._url = url
        self._host = url.hostname
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._id = 0

    def _rpc(self, method: str, params: list[Any]) -> Any:
        self._id += 1
        body = json.dumps({"jsonrpc": "2.0", "id": self._id, "method": method, "params": params})
        try:
            if self._conn is None:
                cls = http.client.HTTPSConnection if self._url.scheme == "https" else http.client.HTTPConnection
                self._conn = cls(self._host, self._url.port, timeout=self._timeout)
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

    def has_logs(self, addresses: Sequence[str], first: int, last: int) -> bool:
        logs = self._rpc("eth_getLogs", [{"address": addresses, "fromBlock": hex(first), "toBlock": hex(last)}])
        return bool(logs)

    def block_timestamp(self, number: int) -> int:
        return int(self._rpc("eth_getBlockByNumber", [hex(number), False])["timestamp"], 16)

    def prestate(self, to: str, calldata: bytes, block: int) -> dict[str, Any]:
        """Every account and storage slot the call reads at `block` (debug_traceCall, prestateTracer)."""
        result = self._rpc("debug_traceCall", [{"from": ZERO_ADDRESS, "to": to, "data": "0x" + calldata.hex()},
                                               hex(block), {"tracer": "prestateTracer"}])
        if not isinstance(result, dict):
            raise ChainError(f"debug_traceCall answered {str(result)[:200]}")
        return result


class _RefusingPort:
    """A local TCP port bound but never listening: every connection to it is refused at once. pyrevm's fork URL
    points here, so a read of state we did not insert fails in well under a millisecond instead of fetching."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))  # held, so nothing else can listen on it
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"


def _is_miss(error: BaseException) -> bool:
    """pyrevm's error when it tried to fetch (from the refusing port): state we did not insert."""
    text = str(error)
    return "Database(" in text or "reqwest" in text


def _merge(into: dict[str, Any], prestate: dict[str, Any]) -> None:
    for address, account in prestate.items():
        known = into.setdefault(address.lower(), {"storage": {}})
        for key in ("balance", "nonce", "code"):
            if key in account:
                known[key] = account[key]
        known["storage"].update(account.get("storage") or {})


def _insert(evm: Any, state: dict[str, Any]) -> None:
    """Into the EVM's database. pyrevm loads (warms) an account when a slot is inserted, and a second slot of a
    warm account would read its original value first (a miss): each insert is reverted out of the journal, so
    the account stays cold and the slot stays in the database."""
    for address, account in state.items():
        code = account.get("code")
        evm.insert_account_info(address, pyrevm.AccountInfo(  # type: ignore[call-arg]  # the stub omits balance
            balance=int(account.get("balance", "0x0"), 16), nonce=int(account.get("nonce", 0)),
            code=bytes.fromhex(code[2:]) if code and code != "0x" else None))
        for slot, value in (account.get("storage") or {}).items():
            checkpoint = evm.snapshot()
            evm.insert_account_storage(address, int(slot, 16), int(value, 16))
            evm.revert(checkpoint)


@dataclass
class _Pinned:
    evm: Any
    block: int
    lock: threading.Lock
    checked_at: float  # monotonic time the chain head was last confirmed equal to `block`
    timestamp: int = 0
    state: dict[str, Any] = field(default_factory=dict)  # every account and slot inserted into `evm`


class PinnedPolicy:
    """Runs PolicyRegistry.evaluate in pyrevm against state pinned at a block; follows new blocks.

    A background thread polls the head; on a new block it forks a fresh EVM at
    that block, warms it with recent calls (so their storage is fetched off the
    decision path) and swaps it in atomically. When the head cannot be confirmed
    for `max_age_seconds`, evaluate raises StateStale (fail closed).
    """

    WARM_CALLS = 32

    def __init__(self, rpc_url: str, policy_registry: str, policy_id: bytes, *, watch: tuple[str, ...] = (),
                 poll_seconds: float = 0.2, max_age_seconds: float = 15.0, approvers: str | None = None,
                 fetch_timeout_seconds: float = 2.0, fetch_inline: bool = True):
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
        # state fetches on their own connection and deadline; `fetch_inline` False: evaluate raises StateNotCached
        # and the caller fetches off its event loop (the authorizer); True: evaluate fetches itself (tools, tests)
        self._fetcher = _HeadReader(rpc_url, timeout=fetch_timeout_seconds)
        self._fetch_lock = threading.Lock()
        self.fetch_inline = fetch_inline
        self._refusing = _RefusingPort()
        self._pinned: _Pinned | None = None
        self._recent: OrderedDict[tuple[str, bytes], None] = OrderedDict()
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

    def _evm(self, number: int, timestamp: int, state: dict[str, Any]) -> Any:
        evm = pyrevm.EVM(fork_url=self._refusing.url, fork_block=str(number), spec_id=EVM_SPEC)
        evm.set_block_env(pyrevm.BlockEnv(number=number, timestamp=timestamp))
        _insert(evm, state)
        return evm

    def _pin(self, number: int, timestamp: int) -> _Pinned:
        """A new EVM at `number` holding the state of the current() lookup and of the recent calls, fetched here
        (the follower's thread, our client's deadline): the decision path finds them in memory."""
        with self._recent_lock:
            warm = list(self._recent)
        state: dict[str, Any] = {}
        _merge(state, self._head.prestate(self._registry, CURRENT_SELECTOR + self.policy_id, number))
        for to, calldata in warm:
            try:
                _merge(state, self._head.prestate(to, calldata, number))
            except ChainError as e:
                log.warning("warming a recent call at block %d failed: %s", number, e)
        pinned = _Pinned(self._evm(number, timestamp, state), number, threading.Lock(), time.monotonic(), timestamp,
                         state)
        try:
            current = self._call(pinned, CURRENT_SELECTOR + self.policy_id)
            self._watched = [*self._static_watch, to_checksum_address(current[12:32])]
        except ChainError:
            self._watched = list(self._static_watch)  # unknown policy id: evaluate will fail closed
        return pinned

    def fetch(self, miss: StateNotCached) -> None:
        """Fetches the state `miss` needs at its block and inserts it (blocking, bounded by the fetch deadline;
        the authorizer runs it on a worker thread). Raises ChainError when the node does not answer."""
        pinned = self._pinned
        if pinned is None or pinned.block != miss.block:
            return  # the pin moved on meanwhile: deciding again reads the new one
        with self._fetch_lock:
            prestate = self._fetcher.prestate(miss.to, miss.calldata, miss.block)
        with pinned.lock:
            _merge(pinned.state, prestate)
            try:
                _insert(pinned.evm, prestate)
            except BaseException:  # pyrevm raises pyo3 panics as BaseException
                try:  # an account the EVM still holds warm: a new EVM from everything fetched at this block
                    pinned.evm = self._evm(pinned.block, pinned.timestamp, pinned.state)
                except BaseException as e:
                    raise ChainError(f"cannot load fetched state at block {pinned.block}: {e}") from e

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
                # the same EVM and state, now for `number`: state fetched later is read at the new block
                self._pinned = _Pinned(current.evm, number, current.lock, time.monotonic(), timestamp, current.state)
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
        """Runs the call from the state in memory; a read of state not fetched yet raises StateNotCached, or, with
        `fetch_inline`, is fetched here (bounded by the fetch deadline) and the call runs again."""
        target = to or self._registry
        for _ in range(4):
            try:
                return self._run(pinned, target, calldata)
            except StateNotCached as miss:
                if not self.fetch_inline:
                    raise
                self.fetch(miss)
                pinned = self._pinned or pinned
        raise ChainError(f"the state of this call at block {pinned.block} could not be completed")

    def _run(self, pinned: _Pinned, to: str, calldata: bytes) -> bytes:
        with pinned.lock:
            evm = pinned.evm
            try:
                checkpoint = evm.snapshot()
                try:
                    return bytes(evm.message_call(ZERO_ADDRESS, to, calldata, is_static=True))
                finally:
                    # pyrevm leaves each call's journal frame behind (~4 entries per call, never freed
                    # while the pin lives); reverting drops it
                    evm.revert(checkpoint)
            except BaseException as e:  # pyrevm raises pyo3 panics as BaseException
                if _is_miss(e):
                    raise StateNotCached(to, calldata, pinned.block) from None
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
        out = self._call(self._fresh(), APPROVER_KEY_SELECTOR + text_id(name), to=self._approvers)
        if len(out) != 64:
            raise ChainError(f"approverKey returned {len(out)} bytes, expected 64")
        key, active = out[:32], int.from_bytes(out[32:], "big")
        return key if active == 1 and any(key) else None

    def evaluate(self, action: PolicyAction) -> Verdict:
        pinned = self._fresh()
        calldata = encode_evaluate(self.policy_id, action)
        verdict = decode_verdict(self._call(pinned, calldata), pinned.block)
        # warmed at the next pin; the state read depends on who/what, not the amount (a miss would fetch anyway)
        warm = (self._registry, calldata[:164] + bytes(32) + calldata[196:])
        with self._recent_lock:
            self._recent[warm] = None
            self._recent.move_to_end(warm)
            if len(self._recent) > self.WARM_CALLS:
                self._recent.popitem(last=False)
        return verdict

