"""Fuzzing the CLI in-process: every generated input either plans (fits, predicts) correctly or
is refused with exit code 2 and one line naming the file; never a traceback, never a hang.

The profile is fixed (derandomized, no example database), so CI sees the same cases each run.
Failures are collected over the whole run and reported together, one reproducer per distinct
failure, instead of stopping (and shrinking) at the first; ``benchmarks/fuzz_cli.py`` runs the
same strategies for thousands of cases.
"""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from tests.fuzz_inputs import (
    Case,
    Outcome,
    fit_cases,
    plan_cases,
    predict_cases,
    run_case,
    save_case,
)

CASE_LIMIT_S = 30.0
"""Per-case wall-clock limit (SIGALRM); a valid small plan takes about 1.5 s."""


def _fuzz(strategy, examples: int, root: Path) -> list[tuple[Case, Outcome]]:
    seen: list[tuple[Case, Outcome]] = []
    counter = itertools.count()

    @settings(derandomize=True, database=None, max_examples=examples, deadline=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much])
    @given(case=strategy)
    def run(case: Case) -> None:
        seen.append((case, run_case(case, root / f"case{next(counter)}", limit_s=CASE_LIMIT_S)))

    run()
    return seen


def _report(seen: list[tuple[Case, Outcome]], root: Path) -> str:
    """One line per distinct failure, with the smallest input that shows it saved beside."""
    smallest: dict[str, tuple[Case, Outcome]] = {}
    for case, outcome in seen:
        if not outcome.ok:
            known = smallest.get(outcome.signature)
            if known is None or case.size() < known[0].size():
                smallest[outcome.signature] = (case, outcome)
    lines = []
    for i, (signature, (case, outcome)) in enumerate(sorted(smallest.items())):
        folder = root / "failures" / f"{i:02d}"
        save_case(case, outcome, folder)
        lines.append(f"{signature}\n    {outcome.detail[:200]}\n    reproduce: {folder}")
    return "\n".join(lines)


@pytest.mark.parametrize(("strategy", "examples", "command"), [
    (plan_cases(), 32, "plan"),
    (fit_cases(), 24, "fit"),
    (predict_cases(), 12, "predict"),
], ids=["plan", "fit", "predict"])
def test_cli_answers_every_input_with_a_checked_result_or_one_line(strategy, examples, command,
                                                                  tmp_path):
    seen = _fuzz(strategy, examples, tmp_path)
    categories = Counter(outcome.category for _, outcome in seen)
    # Both branches must be exercised, or the property passed by luck.
    assert categories["ok"] >= max(3, examples // 8), categories
    assert categories["error"] + categories["infeasible"] >= max(3, examples // 8), categories
    assert any(c.intent == "valid" for c, o in seen if o.category == "ok")
    failures = [outcome for _, outcome in seen if not outcome.ok]
    assert not failures, (f"{len(failures)} of {len(seen)} {command} cases failed "
                          f"({dict(categories)}):\n{_report(seen, tmp_path)}")
