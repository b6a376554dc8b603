"""The ``attncourse`` command line."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attncourse", description="Tools of the attncourse course on attention."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    check = sub.add_parser("check", help="grade an exercise notebook locally")
    check.add_argument("notebook", nargs="+", help="path to an exercise notebook (.ipynb)")
    check.add_argument("--json", action="store_true", help="print the results as JSON")
    check.add_argument(
        "--timeout", type=float, default=120.0, help="seconds allowed per cell (default 120)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if args.command == "check":
        from .grading.selfcheck import run_check

        return run_check(args.notebook, as_json=args.json, timeout=args.timeout)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
