"""Find the benchmark modules and run them.

    python -m benchmarks             run every benchmarks/bench_*.py
    python -m benchmarks NAME ...    run only bench_NAME (the "bench_" prefix is optional)
    python -m benchmarks --list      list what would run

A benchmark is a module named ``bench_<something>.py`` in this folder with a ``main()``
that takes no arguments. It prints its own results (and may write files under
benchmarks/results/). ``main()`` succeeds by returning None or 0; any other return value,
or an exception, is a failure. The others still run, and the exit status is 1 if any
failed.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
PREFIX = "bench_"


def discover() -> list[str]:
    """Names of the benchmark modules in this folder, sorted."""
    return sorted(
        info.name
        for info in pkgutil.iter_modules([str(HERE)])
        if info.name.startswith(PREFIX) and not info.ispkg
    )


def select(available: list[str], wanted: list[str]) -> list[str]:
    if not wanted:
        return available
    chosen = []
    for name in wanted:
        module = name if name.startswith(PREFIX) else PREFIX + name
        if module not in available:
            raise SystemExit(
                f"unknown benchmark {name!r}; available: {', '.join(available) or 'none'}"
            )
        chosen.append(module)
    return chosen


def run_one(module_name: str) -> bool:
    """Import and run one benchmark; True when it succeeded."""
    print(f"== {module_name}", flush=True)
    start = time.perf_counter()
    try:
        module = importlib.import_module(f"{__package__ or 'benchmarks'}.{module_name}")
        entry = getattr(module, "main", None)
        if not callable(entry):
            print(f"!! {module_name} has no main()", file=sys.stderr)
            return False
        status = entry()
        ok = status is None or (type(status) is int and status == 0)
    except Exception:  # report it and go on with the next benchmark
        traceback.print_exc()
        ok = False
    elapsed = time.perf_counter() - start
    print(f"== {module_name}: {'ok' if ok else 'FAILED'} in {elapsed:.1f} s", flush=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)

    available = discover()
    chosen = select(available, args.names)
    if args.list:
        print("\n".join(chosen) if chosen else "no benchmarks found")
        return 0
    if not chosen:
        print(f"no benchmarks found (looked for {PREFIX}*.py in {HERE})")
        return 0
    failed = [name for name in chosen if not run_one(name)]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):
        # Run as a script (python benchmarks/run.py): make `benchmarks` importable.
        sys.path.insert(0, str(HERE.parent))
        __package__ = "benchmarks"
    sys.exit(main())
