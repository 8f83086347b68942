"""The anchoring worker: store -> Merkle batch -> SaeAnchor.anchor(root, ...)."""

from __future__ import annotations

import logging
import sqlite3
import threading

from eth_account.signers.local import LocalAccount
from web3 import Web3

from ext_authz.anchoring.store import AnchorStore
from ext_authz.chain.client import ChainClient
from ext_authz.chain.hsm_wallet import HsmWallet
from ext_authz.errors import AnchorError, ChainError

log = logging.getLogger("sealgate.anchor")


class Anchorer:
    """Anchoring side: cuts batches of persisted leaves and sends them to SaeAnchor."""

    def __init__(self, store: AnchorStore, client: ChainClient, anchor_address: str, account: LocalAccount | HsmWallet,
                 *, interval_seconds: float = 1.0, batch_max_leaves: int = 512):
        self.store = store
        self._client = client
        self._anchor = client.contract("SaeAnchor", anchor_address)
        self._account = account
        self._interval = interval_seconds
        self._batch_max = batch_max_leaves
        self.last_error: str | None = None

    def anchor_pending(self) -> int:
        """Cuts batches of persisted leaves and anchors every pending batch. Returns batches anchored."""
        while self.store.cut_batch(self._batch_max):
            pass
        done = 0
        for root, first, last, count in self.store.pending_batches():
            already = self._anchor.functions.batchOf(root).call()
            if already[0] != 0:  # anchored before a restart: recover the tx from the event
                logs = self._anchor.events.BatchAnchored().get_logs(
                    from_block=already[0], to_block=already[0], argument_filters={"root": root}
                )
                tx = Web3.to_hex(logs[0]["transactionHash"]) if logs else ""
                self.store.mark_anchored(root, tx, already[0])
            else:
                receipt = self._client.transact(self._account, self._anchor.functions.anchor(root, count, first, last))
                self.store.mark_anchored(root, Web3.to_hex(receipt.transactionHash), receipt.blockNumber)
            done += 1
        return done

    def run(self, stop: threading.Event) -> None:
        """Anchors every `interval_seconds` until `stop` is set, then once more."""
        while True:
            stopping = stop.wait(self._interval)
            try:
                self.anchor_pending()
                self.last_error = None
            except (ChainError, AnchorError, sqlite3.Error) as e:
                self.last_error = str(e)
                log.warning("anchoring failed, will retry: %s", e)
            except Exception as e:  # keep going: the leaves are safe in the store
                self.last_error = f"unexpected: {e!r}"
                log.exception("anchoring error")
            if stopping:
                return

