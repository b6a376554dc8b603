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
    check = sub.add_parser(
        "check",
        help="grade an exercise notebook locally (runs the notebook's code, in a sandbox)",
        description=(
            "Grade exercise notebooks with the same engine and the same hidden tests as the "
            "course's nbgrader autograde. This RUNS THE NOTEBOOK'S CODE: in a sandbox (a "
            "separate process, without network, with resource limits, and with a private "
            "file system and an unprivileged user where bubblewrap is installed), while the "
            "checks and their verdicts stay in this process. Run it on your own work; an "
            "instructor checking a student's notebook gets the same sandbox, and should keep "
            "the default isolation (or --isolation bwrap to insist on the strongest)."
        ),
    )
    check.add_argument("notebook", nargs="+", help="path to an exercise notebook (.ipynb)")
    check.add_argument("--json", action="store_true", help="print the results as JSON")
    check.add_argument(
        "--timeout", type=float, default=120.0, help="seconds allowed per cell (default 120)"
    )
    check.add_argument(
        "--isolation",
        choices=("auto", "bwrap", "basic"),
        default="auto",
        help="auto (default): bubblewrap when it works here, else basic; bwrap: refuse to run "
        "without it; basic: no private file system (the notebook's code can read your files)",
    )
    autograde = sub.add_parser(
        "autograde",
        help="grade a whole class with nbgrader, several submissions at a time, resumably",
        description=(
            "Grade every submission of ASSIGNMENT under submitted/*/ASSIGNMENT/ with nbgrader's "
            "autograde as nbgrader_config.py configures it (the sandboxed engine), --jobs at a "
            "time. Run it from the course directory. A submission already graded from the same "
            "submitted timestamp is skipped (unless --force), so running the same command again "
            "after a crash or Ctrl-C finishes the class. The exit status is non-zero when a "
            "submission could not be graded."
        ),
    )
    from .grading.batch import add_arguments

    add_arguments(autograde)
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

        return run_check(args.notebook, as_json=args.json, timeout=args.timeout, isolation=args.isolation)
    if args.command == "autograde":
        from .grading.batch import main as autograde_main

        return autograde_main(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
