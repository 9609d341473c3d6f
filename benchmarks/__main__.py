"""``python -m benchmarks [list | run NAME [--quick] [--out DIR] ...]``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import all_experiments
from .common import Report, atomic_write_text

DEFAULT_OUT = Path("results")


def _parser(registry: dict[str, object]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Task-robust pre-training experiments. With no command: the quickstart "
        "(every experiment in its quick form, written to results/ with results/REPORT.md).",
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("list", help="name every experiment")
    run = sub.add_parser("run", help="run one experiment")
    runs = run.add_subparsers(dest="name", metavar="NAME", required=True)
    for name, exp in registry.items():
        p = runs.add_parser(name, help=exp.summary, description=exp.summary)  # type: ignore[attr-defined]
        p.add_argument("--quick", action="store_true", help="the small configuration")
        p.add_argument(
            "--out", type=Path, default=DEFAULT_OUT, help="output folder (default: results)"
        )
        if exp.add_arguments is not None:  # type: ignore[attr-defined]
            exp.add_arguments(p)  # type: ignore[attr-defined]
    return parser


def quickstart(out: Path) -> int:
    registry = all_experiments()
    chosen = sorted(
        (e for e in registry.values() if e.quickstart_order is not None),
        key=lambda e: e.quickstart_order,  # type: ignore[arg-type, return-value]
    )
    sections: list[str] = []
    start = time.perf_counter()
    for exp in chosen:
        t0 = time.perf_counter()
        print(f"== {exp.name}: {exp.summary}", flush=True)
        parser = _parser(registry)
        args = parser.parse_args(["run", exp.name, *exp.quickstart_args, "--out", str(out)])
        report: Report = exp.run(args)
        seconds = time.perf_counter() - t0
        print(f"   {exp.name} done in {seconds:.1f} s -> {report.json_path}", flush=True)
        sections.append(f"## {exp.name} ({seconds:.0f} s)\n\n{report.markdown.strip()}\n")
    total = time.perf_counter() - start
    text = (
        "# Quickstart report\n\n"
        f"`python -m benchmarks` ran {len(chosen)} experiments in their quick form "
        f"in {total:.0f} s. Each section shows its plot and what it shows; the numbers are in "
        "the JSON file beside it.\n\n" + "\n".join(sections)
    )
    atomic_write_text(out / "REPORT.md", text)
    print(f"wrote {out / 'REPORT.md'} ({total:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    registry = all_experiments()
    args = _parser(registry).parse_args(argv)
    if args.command is None:
        return quickstart(DEFAULT_OUT)
    if args.command == "list":
        width = max(len(n) for n in registry)
        for name, exp in registry.items():
            mark = " (in quickstart)" if exp.quickstart_order is not None else ""
            print(f"{name.ljust(width)}  {exp.summary}{mark}")
        return 0
    report = registry[args.name].run(args)
    print(f"wrote {report.json_path} and {', '.join(str(p) for p in report.png_paths)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
