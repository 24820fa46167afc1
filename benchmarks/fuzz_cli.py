"""Fuzz the CLI in-process with the suite's strategies for many cases; count what happened.

    python benchmarks/fuzz_cli.py [--cases 10000] [--seed 0] [--out-dir fuzz-failures]
                                  [--limit-s 60]

Each case is a fleet, workload, trace, measurement table or models file (valid, edge-valued
or malformed; see tests/fuzz_inputs.py) and a `plan`, `fit` or `predict --calibrate` command
line. It passes when it exits 0 with output that passes the independent check, or exits 2 with
one error line naming the file. The table counts each outcome; the smallest input of every
distinct failure, and the first few failures as they came, are written to --out-dir with a
README.txt that reproduces them.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests` from a checkout.
from tests.fuzz_inputs import CATEGORIES, Case, Outcome, cases, run_case, save_case

ROWS = (
    ("cases", None),
    ("exit 0, output checked", ("ok",)),
    ("exit 2, one line naming the file", ("error",)),
    ("exit 2, one line naming the unmet demand", ("infeasible",)),
    ("tracebacks", ("traceback",)),
    ("hangs", ("hang",)),
    ("multi-line or malformed errors", ("multi_line",)),
    ("error line names no input file", ("unnamed",)),
    ("exit 0, output fails the check", ("bad_output",)),
    ("exit 0 on input known to be invalid", ("accepted_invalid",)),
    ("other exit codes", ("exit_code",)),
)
FIRST_FAILURES = 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=Path("fuzz-failures"))
    parser.add_argument("--limit-s", type=float, default=60.0,
                        help="Per-case wall-clock limit; a case past it counts as a hang.")
    args = parser.parse_args(argv)

    counts: Counter[str] = Counter()
    by_command: Counter[tuple[str, str]] = Counter()
    signatures: Counter[str] = Counter()
    smallest: dict[str, tuple[Case, Outcome]] = {}
    first: list[tuple[Case, Outcome]] = []
    seconds = Counter[str]()
    scratch = Path(tempfile.mkdtemp(prefix="wattsched-fuzz-"))
    start = time.perf_counter()

    @seed(args.seed)
    @settings(max_examples=args.cases, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=cases())
    def run(case: Case) -> None:
        if stop:
            raise KeyboardInterrupt
        index = sum(counts.values())
        workdir = scratch / f"case{index}"
        outcome = run_case(case, workdir, limit_s=args.limit_s)
        shutil.rmtree(workdir, ignore_errors=True)
        counts[outcome.category] += 1
        by_command[(case.command, outcome.category)] += 1
        seconds[case.command] += outcome.seconds
        if not outcome.ok:
            signatures[outcome.signature] += 1
            known = smallest.get(outcome.signature)
            if known is None or case.size() < known[0].size():
                smallest[outcome.signature] = (case, outcome)
            if len(first) < FIRST_FAILURES:
                first.append((case, outcome))
        if (index + 1) % 50 == 0:
            print(f"  {index + 1} cases, {time.perf_counter() - start:.0f} s, "
                  f"{sum(signatures.values())} failures", file=sys.stderr, flush=True)

    # Ctrl-C (SIGINT) finishes the case in hand, then reports the cases run so far; inside a
    # case the CLI would turn it into its own exit code 1.
    stop: list[bool] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: stop.append(True))
    interrupted = False
    try:
        run()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.signal(signal.SIGINT, previous)
        shutil.rmtree(scratch, ignore_errors=True)
    elapsed = time.perf_counter() - start

    total = sum(counts.values())
    if interrupted:
        print(f"interrupted after {total} of {args.cases} cases")
    commands = sorted({c for c, _ in by_command})
    print(f"fuzz_cli: {total} cases, seed {args.seed}, {elapsed:.0f} s "
          f"({', '.join(f'{c} {seconds[c]:.0f} s' for c in commands)})")
    print(f"{'outcome':44s}{'all':>8s}" + "".join(f"{c:>9s}" for c in commands))
    for label, keys in ROWS:
        if keys is None:
            row = [total] + [sum(n for (c, _), n in by_command.items() if c == cmd)
                             for cmd in commands]
        else:
            row = [sum(counts[k] for k in keys)] + [
                sum(by_command[(cmd, k)] for k in keys) for cmd in commands]
        print(f"{label:44s}{row[0]:8d}" + "".join(f"{n:9d}" for n in row[1:]))
    assert set(counts) <= set(CATEGORIES), counts

    if signatures:
        if args.out_dir.exists():
            shutil.rmtree(args.out_dir)
        print(f"\n{len(signatures)} distinct failures (count, signature, smallest input):")
        for i, (signature, n) in enumerate(signatures.most_common()):
            case, outcome = smallest[signature]
            folder = args.out_dir / f"distinct-{i:02d}"
            save_case(case, outcome, folder)
            print(f"{n:6d}  {signature}\n        {outcome.detail[:160]}\n        -> {folder}")
        for i, (case, outcome) in enumerate(first):
            save_case(case, outcome, args.out_dir / f"first-{i:02d}")
        print(f"first {len(first)} failures as they came: {args.out_dir}/first-*")
    else:
        print("\nno failures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
