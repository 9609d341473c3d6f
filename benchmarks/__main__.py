"""``python -m benchmarks [list | run NAME [--quick] [--out DIR] ...]``.

:func:`main` raises ``ValueError`` for invalid values (for programs and tests);
``python -m benchmarks`` (:func:`cli`) reports them the way argparse reports its own
errors -- the usage line, ``PROG: error: MESSAGE``, exit status 2, no traceback. Both check
that ``--out`` can be written before an experiment runs.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

from . import all_experiments
from .common import Report, atomic_write_text

DEFAULT_OUT = Path("results")


def build_parser(registry: dict[str, object] | None = None) -> argparse.ArgumentParser:
    """The parser of ``python -m benchmarks``: ``list``, and ``run NAME`` with ``--quick``,
    ``--out`` and each experiment's own options (``registry``: default every experiment)."""
    registry = all_experiments() if registry is None else registry
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


def check_writable(out: Path) -> None:
    """Raise ``ValueError`` naming ``--out`` unless ``out`` is (or can be created as) a
    writable folder. Tries it: a temporary file in ``out``, or a temporary folder in its
    nearest existing parent, removed at once (nothing is left behind)."""
    out = Path(out)
    target = out
    while not target.exists():
        if target.parent == target:
            break
        target = target.parent
    if target.exists() and not target.is_dir():
        raise ValueError(f"--out {out} is not a folder ({target} is a file)")
    try:
        if target == out:
            with tempfile.TemporaryFile(dir=out, prefix=".write-check-"):
                pass
        else:
            Path(tempfile.mkdtemp(dir=target, prefix=".write-check-")).rmdir()
    except OSError as err:
        raise ValueError(f"--out {out} is not writable: {err.strerror or err}") from None


def check_values(args: argparse.Namespace) -> None:
    """Numbers given on the command line must be finite; counts (integers) ``>= 0``.
    Experiments check their own ranges on top (errors naming the option)."""
    for name, value in sorted(vars(args).items()):
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            flag = "--" + name.replace("_", "-")
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"{flag} must be a finite number, got {item}")
            if isinstance(item, int) and not isinstance(item, bool) and item < 0:
                raise ValueError(f"{flag} must be >= 0, got {item}")


def quickstart(out: Path) -> int:
    check_writable(out)
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
        parser = build_parser(registry)
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
    args = build_parser(registry).parse_args(argv)
    if args.command is None:
        return quickstart(DEFAULT_OUT)
    if args.command == "list":
        width = max(len(n) for n in registry)
        for name, exp in registry.items():
            mark = " (in quickstart)" if exp.quickstart_order is not None else ""
            print(f"{name.ljust(width)}  {exp.summary}{mark}")
        return 0
    check_values(args)
    check_writable(args.out)
    report = registry[args.name].run(args)
    print(f"wrote {report.json_path} and {', '.join(str(p) for p in report.png_paths)}")
    return 0


def cli(argv: list[str] | None = None) -> int:
    """``python -m benchmarks``: :func:`main` with invalid values (``ValueError``,
    ``TypeError``) reported as argparse reports a bad option: usage, ``error: ...``, exit 2."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        return main(argv)
    except (ValueError, TypeError) as err:
        _usage_parser(argv).error(str(err))  # prints usage and the message; exits 2
        raise  # pragma: no cover (error() exits)


def _usage_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The (sub)parser whose usage line fits ``argv``: ``run NAME``'s, else the top one."""
    registry = all_experiments()
    parser = build_parser(registry)
    if len(argv) >= 2 and argv[0] == "run" and argv[1] in registry:
        exp = registry[argv[1]]
        sub = argparse.ArgumentParser(prog=f"{parser.prog} run {exp.name}")
        sub.add_argument("--quick", action="store_true")
        sub.add_argument("--out", type=Path, default=DEFAULT_OUT)
        if exp.add_arguments is not None:
            exp.add_arguments(sub)
        return sub
    return parser


if __name__ == "__main__":
    raise SystemExit(cli())
