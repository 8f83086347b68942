"""Suite-wide setup: the checkout's pinned anvil (npm) unless ANVIL_BIN names another."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("ANVIL_BIN", str(REPO / "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"))
