"""The anchoring worker: store -> Merkle batch -> SaeAnchor, surviving the chain.

One batch is in flight at a time (batches are large; the contract's counter orders them anyway):
send with EIP-1559 fees, replace the same nonce with bumped fees while it is stuck, record it as
`mined` with the range the contract assigned, count it `anchored` after `confirmations` blocks,
and put it back to `pending` when a reorg drops it. SaeAnchor makes re-anchoring a root a no-op,
so a crash, a front-run or a replacement race never anchors a batch twice.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from web3 import Web3
from web3.exceptions import TransactionNotFound
from web3.logs import DISCARD

from ext_authz.anchoring.store import AnchorStore
from ext_authz.chain.artifacts import describe_revert
from ext_authz.chain.client import ChainClient
from ext_authz.chain.hsm_wallet import HsmWallet
from ext_authz.errors import AnchorError, ChainError

log = logging.getLogger("sealgate.anchor")

MODES = ("root", "leaves")
ANCHORER_ROLE = Web3.keccak(text="ANCHORER_ROLE")
ANCHOR_SELECTOR = Web3.keccak(text="anchor(bytes32,uint64)")[:4]
ANCHOR_WITH_LEAVES_SELECTOR = Web3.keccak(text="anchorWithLeaves(bytes32,bytes32[])")[:4]


def anchor_with_leaves_calldata(root: bytes, values: list[bytes]) -> bytes:
    """ABI encoding of anchorWithLeaves(root, values): head (root, offset 0x40), then the array (length, items)."""
    return (ANCHOR_WITH_LEAVES_SELECTOR + root + (64).to_bytes(32, "big") + len(values).to_bytes(32, "big")
            + b"".join(values))


@dataclass(frozen=True)
class AnchoringPolicy:
    """How the anchorer treats the chain (the `anchor:` config section carries the same fields)."""

    mode: str = "root"  # root: only the root on-chain; leaves: the batch's values in the calldata too
    confirmations: int = 1  # blocks (the including one counts) before a batch counts as anchored
    stuck_seconds: float = 30.0  # unmined this long: replace with bumped fees
    fee_bump_percent: int = 25  # nodes require >= 10 % on both fee fields to replace
    poll_seconds: float = 0.05
    degraded_after_seconds: float = 60.0  # oldest unanchored leaf older than this: /healthz degraded
    max_fee_gwei: float = 1000.0  # fee bumps stop here: a stuck tx then waits (and /healthz turns degraded)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise AnchorError(f"anchor mode must be one of {MODES}, found {self.mode!r}")
        if type(self.confirmations) is not int or not 1 <= self.confirmations <= 1000:
            raise AnchorError(f"confirmations must be an integer 1-1000, found {self.confirmations!r}")
        if not 11 <= self.fee_bump_percent <= 500:
            raise AnchorError(f"fee_bump_percent must be 11-500, found {self.fee_bump_percent}")
        if self.stuck_seconds <= 0 or self.poll_seconds <= 0 or self.degraded_after_seconds <= 0 or self.max_fee_gwei <= 0:
            raise AnchorError("stuck_seconds, poll_seconds, degraded_after_seconds and max_fee_gwei must be positive")


class Anchorer:
    """Anchoring side: cuts batches of persisted leaves and anchors them in SaeAnchor."""

    def __init__(self, store: AnchorStore, client: ChainClient, anchor_address: str, account: LocalAccount | HsmWallet,
                 *, interval_seconds: float = 1.0, batch_max_leaves: int = 512, policy: AnchoringPolicy | None = None):
        self.store = store
        self._client = client
        self._w3 = client.w3
        self._anchor = client.contract("SaeAnchor", anchor_address)
        self._account = account
        self._interval = interval_seconds
        self._batch_max = batch_max_leaves
        self.policy = policy or AnchoringPolicy()
        self.last_error: str | None = None
        self.last_success: float | None = None
        self.replacements = 0  # fee-bumped replacements sent (metrics, tests)
        self.reorged = 0  # batches a reorg dropped and that went back to pending
        self._chain_id: int | None = None

    # ------------------------------------------------------------ start

    def check_role(self) -> bool:
        """True when the wallet holds ANCHORER_ROLE on the anchor contract; logs which it is."""
        try:
            held = bool(self._anchor.functions.hasRole(ANCHORER_ROLE, self._account.address).call())
        except Exception as e:  # web3 raises many unrelated types; one boundary here
            raise ChainError(f"cannot read ANCHORER_ROLE of {self._account.address}: {describe_revert(e)}") from e
        if held:
            log.info("anchorer %s holds ANCHORER_ROLE on SaeAnchor %s (mode %s, %d confirmation(s))",
                     self._account.address, self._anchor.address, self.policy.mode, self.policy.confirmations)
        else:
            log.error("anchorer %s does NOT hold ANCHORER_ROLE on SaeAnchor %s: every anchoring would revert",
                      self._account.address, self._anchor.address)
        return held

    # ------------------------------------------------------------ one round

    def anchor_pending(self) -> int:
        """Cuts batches, anchors every pending one, then settles confirmations and reorgs.
        Returns the number of batches newly mined in this round."""
        while self.store.cut_batch(self._batch_max):
            pass
        done = 0
        for root, _first, _last, count in self.store.pending_batches():
            self._anchor_batch(root, count)
            done += 1
        self.settle()
        return done

    def settle(self) -> None:
        """Mined batches: confirmed after enough blocks; back to pending when a reorg dropped them."""
        mined = self.store.mined_batches()
        if not mined:
            return
        head = self._call(lambda: self._w3.eth.block_number)
        for root, tx_hash, block, block_hash in mined:
            receipt = self._receipt(tx_hash)
            if receipt is None or Web3.to_hex(receipt["blockHash"]) != block_hash:
                self._after_reorg(root, tx_hash)
            elif head - block + 1 >= self.policy.confirmations:
                self.store.mark_confirmed(root)

    def _after_reorg(self, root: bytes, tx_hash: str) -> None:
        batch = self._call(lambda: self._anchor.functions.batchOf(root).call())
        if batch[0] != 0:  # still anchored (the tx was re-included, or another one anchored the root)
            self._record_existing(root, batch)
            return
        log.warning("reorg dropped batch 0x%s (tx %s): anchoring it again", root.hex(), tx_hash)
        self.reorged += 1
        self.store.reset_batch(root)

    def _anchor_batch(self, root: bytes, count: int) -> None:
        batch = self._call(lambda: self._anchor.functions.batchOf(root).call())
        if batch[0] != 0:  # anchored before a restart, or front-run: recover the range from the chain
            self._record_existing(root, batch)
            return
        if self.policy.mode == "leaves":
            values = self.store.batch_values(root)
            fn = self._anchor.functions.anchorWithLeaves(root, values)
            data = anchor_with_leaves_calldata(root, values)
        else:
            fn = self._anchor.functions.anchor(root, count)
            data = ANCHOR_SELECTOR + root + count.to_bytes(32, "big")
        receipt = self._send(root, data)
        if receipt["status"] != 1:
            raise AnchorError(f"anchoring batch 0x{root.hex()} reverted in tx {Web3.to_hex(receipt['transactionHash'])}: "
                              f"{self._revert_reason(fn, receipt)}")
        events = self._anchor.events.BatchAnchored().process_receipt(receipt, errors=DISCARD)
        mine = [e for e in events if e["args"]["root"] == root]
        if not mine:  # our tx was a no-op: another one anchored the root first
            self._record_existing(root, self._call(lambda: self._anchor.functions.batchOf(root).call()))
            return
        args = mine[0]["args"]
        self._record(root, Web3.to_hex(receipt["transactionHash"]), receipt["blockNumber"],
                     Web3.to_hex(receipt["blockHash"]), (args["firstSeq"], args["lastSeq"]))

    def _record_existing(self, root: bytes, batch: Any) -> None:
        block = int(batch[0])
        logs = self._call(lambda: self._anchor.events.BatchAnchored().get_logs(
            from_block=block, to_block=block, argument_filters={"root": root}))
        if not logs:
            raise AnchorError(f"root 0x{root.hex()} is anchored at block {block} but its BatchAnchored event is missing")
        ev = logs[0]
        self._record(root, Web3.to_hex(ev["transactionHash"]), block, Web3.to_hex(ev["blockHash"]),
                     (int(batch[2]), int(batch[3])))

    def _record(self, root: bytes, tx_hash: str, block: int, block_hash: str, chain_range: tuple[int, int]) -> None:
        self.store.mark_anchored(root, tx_hash, block, block_hash, chain_range, status="mined")
        log.info("batch 0x%s mined in block %d as seq %d-%d (tx %s)", root.hex()[:16], block, *chain_range, tx_hash)

    # ------------------------------------------------------------ transactions

    def _fees(self) -> tuple[int, int]:
        base = self._call(lambda: self._w3.eth.get_block("latest")).get("baseFeePerGas", 0)
        tip = self._call(lambda: self._w3.eth.max_priority_fee)
        cap = self._cap()
        return min(2 * int(base) + int(tip), cap), min(int(tip), cap)

    def _cap(self) -> int:
        return int(self.policy.max_fee_gwei * 10**9)

    def _send(self, root: bytes, data: bytes) -> Any:
        """Sends the call `data` to the anchor and waits for its receipt, replacing it (same nonce, fees bumped)
        while it is stuck. Calldata is encoded once by hand: web3 re-encodes a 4,096-value array in ~0.6 s per use."""
        account = self._account
        nonce = self._call(lambda: self._w3.eth.get_transaction_count(account.address, "latest"))
        max_fee, tip = self._fees()
        call: Any = {"from": account.address, "to": self._anchor.address, "data": data, "value": 0}
        gas = self._call(lambda: self._w3.eth.estimate_gas(call))
        if self._chain_id is None:
            self._chain_id = self._call(lambda: self._w3.eth.chain_id)
        tx = {**call, "nonce": nonce, "chainId": self._chain_id, "gas": gas * 6 // 5, "type": 2,
              "maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip}
        del tx["from"]
        sent: list[str] = []
        unchanged = False
        while True:
            tx_hash = sent[-1] if unchanged else self._broadcast(tx, sent)
            if tx_hash is None:  # the node refused the fees as too low to replace a tx at this nonce: bump
                bumped = self._bumped(tx)
                if bumped == tx:
                    raise AnchorError(f"a transaction at nonce {nonce} pays more than anchor.max_fee_gwei="
                                      f"{self.policy.max_fee_gwei}: batch 0x{root.hex()} waits for the next round")
                tx = bumped
                continue
            if not unchanged:
                sent.append(tx_hash)
                self.store.mark_sent(root, tx_hash)
            deadline = time.monotonic() + self.policy.stuck_seconds
            while time.monotonic() < deadline:
                for h in sent:  # any of the replacements may be the one mined
                    receipt = self._receipt(h)
                    if receipt is not None:
                        return receipt
                if self._call(lambda: self._w3.eth.get_transaction_count(account.address, "latest")) > nonce:
                    # the nonce was used by a transaction we do not know (another process with this wallet)
                    for h in sent:
                        receipt = self._receipt(h)
                        if receipt is not None:
                            return receipt
                    raise AnchorError(f"nonce {nonce} of {account.address} was used by another transaction; "
                                      f"batch 0x{root.hex()} is sent again next round")
                time.sleep(self.policy.poll_seconds)
            log.warning("anchoring tx %s unmined after %.0f s: replacing it with fees +%d %%", tx_hash,
                        self.policy.stuck_seconds, self.policy.fee_bump_percent)
            bumped = self._bumped(tx)
            unchanged = bumped == tx  # at the fee cap: keep waiting for the one already in the pool
            if not unchanged:
                self.replacements += 1
            tx = bumped

    def _bumped(self, tx: dict[str, Any]) -> dict[str, Any]:
        pct = 100 + self.policy.fee_bump_percent
        max_fee, tip = self._fees()  # the network may have moved above our bump
        cap = self._cap()
        tip = min(cap, max(tip, tx["maxPriorityFeePerGas"] * pct // 100 + 1))
        fee = min(cap, max(max_fee, tx["maxFeePerGas"] * pct // 100 + 1, tip))
        if fee == tx["maxFeePerGas"] and tip == tx["maxPriorityFeePerGas"]:
            log.warning("anchoring fees at the cap anchor.max_fee_gwei=%s: waiting for the chain without bumping",
                        self.policy.max_fee_gwei)
        return {**tx, "maxPriorityFeePerGas": tip, "maxFeePerGas": fee}

    def _broadcast(self, tx: dict[str, Any], sent: list[str]) -> str | None:
        signed = self._account.sign_transaction(tx)
        try:
            return Web3.to_hex(self._w3.eth.send_raw_transaction(signed.raw_transaction))
        except Exception as e:  # web3 raises many unrelated types; one boundary here
            text = str(e).lower()
            if "already known" in text or "already imported" in text:  # the same signed bytes are in the pool
                return Web3.to_hex(Web3.keccak(signed.raw_transaction))
            if "underpriced" in text or "replacement" in text:
                return None
            raise ChainError(f"sending anchoring tx from {self._account.address} failed: {describe_revert(e)}") from e

    def _receipt(self, tx_hash: str) -> Any | None:
        try:
            return self._w3.eth.get_transaction_receipt(HexStr(tx_hash))
        except TransactionNotFound:
            return None
        except Exception as e:  # web3 raises many unrelated types; one boundary here
            raise ChainError(f"reading receipt {tx_hash} failed: {describe_revert(e)}") from e

    def _revert_reason(self, fn: Any, receipt: Any) -> str:
        try:
            fn.call({"from": self._account.address}, block_identifier=receipt["blockNumber"] - 1)
        except Exception as e:  # web3 raises many unrelated types; one boundary here
            return describe_revert(e)
        return "unknown"

    @staticmethod
    def _call(fn: Any) -> Any:
        try:
            return fn()
        except (ChainError, AnchorError):
            raise
        except Exception as e:  # web3 raises many unrelated types; one boundary here
            raise ChainError(f"RPC failed: {describe_revert(e)}") from e

    # ------------------------------------------------------------ health and loop

    def health(self, now: float | None = None) -> dict[str, Any]:
        """What /healthz reports: degraded when the last round failed or the backlog is older than allowed."""
        t = time.time() if now is None else now
        backlog, oldest = self.store.backlog(t)
        degraded = self.last_error is not None or (oldest is not None and oldest > self.policy.degraded_after_seconds)
        return {"status": "degraded" if degraded else "ok", "backlog": backlog,
                "oldest_unanchored_age_seconds": None if oldest is None else round(oldest, 3),
                "last_error": self.last_error, "last_success": self.last_success,
                "mode": self.policy.mode, "confirmations": self.policy.confirmations,
                "replacements": self.replacements, "reorged": self.reorged}

    def run(self, stop: threading.Event) -> None:
        """Anchors every `interval_seconds` until `stop` is set, then once more."""
        while True:
            stopping = stop.wait(self._interval)
            try:
                self.anchor_pending()
                self.last_error = None
                self.last_success = time.time()
            except (ChainError, AnchorError, sqlite3.Error) as e:
                self.last_error = str(e)
                log.warning("anchoring failed, will retry: %s", e)
            except Exception as e:  # keep going: the leaves are safe in the store
                self.last_error = f"unexpected: {e!r}"
                log.exception("anchoring error")
            if stopping:
                return
