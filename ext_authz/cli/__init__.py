"""`sealgate` command line: one thin module per command group; the logic lives in the library."""

from __future__ import annotations

import argparse
import logging
import sys

from ext_authz.cli import demo, deploy, egress, envoy, evidence, gov, keys, pep, pki, serve, verify
from ext_authz.cli.common import HelpFormatter
from ext_authz.errors import SealgateError

GROUPS = (serve, pep, deploy, verify, evidence, keys, pki, gov, envoy, egress, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sealgate", description="Sealgate: signed, policy-bound AI agent actions",
                                     formatter_class=HelpFormatter,
                                     epilog="`sealgate COMMAND --help` shows each command's flags and an example")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in GROUPS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 1 a check failed (the command says which), 2 usage, configuration or I/O error."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return int(args.func(args))
    except SealgateError as e:
        print(f"sealgate: {e}", file=sys.stderr)
        return 2
