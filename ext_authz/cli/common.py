"""What every command group shares: argument types, the SAE signer from flags, token and JWKS input, signals."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

from ext_authz.errors import ConfigError, UsageError
from ext_authz.signing.base import Signer

HSM_PIN_HELP = "the token's user PIN is read from $SEALGATE_HSM_PIN, never from the command line"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps the examples' line breaks."""


def command(sub: Any, name: str, help: str, example: str, env: str = "") -> argparse.ArgumentParser:
    """A subcommand whose --help ends with an example (and the environment variables it reads)."""
    epilog = "example:\n  " + example.strip().replace("\n", "\n  ")
    if env:
        epilog += "\n\nenvironment:\n  " + env.strip().replace("\n", "\n  ")
    return sub.add_parser(name, help=help, description=help, epilog=epilog, formatter_class=HelpFormatter)


def group(sub: Any, name: str, help: str) -> Any:
    parser = sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)
    return parser.add_subparsers(dest=f"{name}_cmd", required=True, metavar="COMMAND")


def hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected host:port, found {value!r}")
    return host, int(port)


def port(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise argparse.ArgumentTypeError(f"expected a TCP port 1..65535, found {value!r}")
    return int(value)


def add_signer_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key", metavar="FILE", help="SAE signing key file (`sealgate keys generate`): an Ed25519 seed or an ES256 PEM key")
    p.add_argument("--key-dir", metavar="DIR", help="rotating SAE keys (`sealgate keys init`, `sealgate keys rotate`), "
                                                    "followed while running")
    p.add_argument("--hsm-module", metavar="LIB", help=f"PKCS#11 library holding the SAE key instead; {HSM_PIN_HELP}")
    p.add_argument("--hsm-token", metavar="LABEL", help="token label (with --hsm-module)")
    p.add_argument("--endorse-period", type=int, metavar="SECONDS",
                   help="the key (typically --hsm-*) endorses a fresh in-memory signing key this often instead of "
                        "signing every SAE (docs/keys.md); PEPs must fetch the JWKS more often than this")
    p.add_argument("--hsm-key", metavar="LABEL", help="label of the Ed25519 or P-256 key pair in the token (with --hsm-module)")


def signer_from_args(args: argparse.Namespace) -> Signer:
    from ext_authz.signing.file_key import load_file_signer
    from ext_authz.signing.pkcs11 import HsmKey, hsm_signer

    hsm = (args.hsm_module, args.hsm_token, args.hsm_key)
    key_dir = getattr(args, "key_dir", None)
    if sum(map(bool, (args.key, any(hsm), key_dir))) > 1:
        raise UsageError("give one key source (--key, --key-dir or --hsm-module/--hsm-token/--hsm-key), not both")
    if key_dir:
        from ext_authz.signing.keyring import Keyring

        if getattr(args, "endorse_period", None):
            raise UsageError("--endorse-period endorses keys with one --key or --hsm-* key, not a key directory")
        return Keyring(key_dir).start()
    signer: Signer
    if args.key:
        signer = load_file_signer(args.key)
    elif not all(hsm):
        raise UsageError("an SAE signing key is needed: --key FILE, --key-dir DIR, or --hsm-module, --hsm-token and --hsm-key")
    else:
        signer = hsm_signer(HsmKey(*hsm))
    if getattr(args, "endorse_period", None):
        from ext_authz.signing.endorsed import EndorsedSigner

        return EndorsedSigner(signer, args.endorse_period).start()
    return signer


def read_token(value: str, what: str = "token") -> str:
    """A token given inline, as `@file`, or `-` for stdin; an existing path given bare is refused with a hint
    (it would otherwise be read as a malformed token)."""
    if value != "-" and not value.startswith("@") and _is_file(value):
        raise UsageError(f"{value!r} is a file: pass @{value} to read the {what} from it, or - for stdin")
    try:
        if value == "-":
            text = sys.stdin.read()
        elif value.startswith("@"):
            text = Path(value[1:]).read_text()
        else:
            text = value
    except OSError as e:
        raise UsageError(f"cannot read the {what} from {value!r}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise UsageError(f"the {what} in {value!r} is not text") from e
    text = text.strip()
    if not text:
        raise UsageError(f"the {what} is empty")
    return text


def _is_file(value: str) -> bool:
    try:
        return Path(value).is_file()
    except OSError:  # a token is longer than any file name
        return False


def load_jwks(source: str) -> dict[str, Any]:
    try:
        if source.startswith(("http://", "https://")):
            with urllib.request.urlopen(source, timeout=5) as r:
                doc = json.loads(r.read())
        else:
            doc = json.loads(Path(source).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"JWKS {source}: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ConfigError(f"JWKS {source}: expected an object with a 'keys' list")
    return doc


def stop_on_signal() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop
