"""The ablation summary's statistics: averaging on vs off, difference of medians, U test."""

from __future__ import annotations

from benchmarks.studies.ablation import averaging_effect, median_difference


def _runs(variant: str, evals: list[int | None], acc: float) -> list[dict]:
    return [
        {
            "task": "t",
            "budget": 1000,
            "variant": variant,
            "evals_to_target": e,
            "train_loss": 0.1,
            "test_acc": acc + i * 1e-4,
        }
        for i, e in enumerate(evals)
    ]


def _row(table: str, measure: str) -> list[str]:
    line = next(line for line in table.splitlines() if f"| {measure} |" in line)
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_clear_difference_names_the_better_side() -> None:
    on = _runs("default", [100 + i for i in range(12)], acc=0.95)
    off = _runs("no averaging (ablation)", [300 + i for i in range(11)] + [None], acc=0.90)
    table = averaging_effect(on + off)
    evals = _row(table, "evals to target")
    assert evals[0] == "t (12/12)" and evals[-1] == "on better"
    assert evals[2] == "105.5" and evals[3] == "305.5"
    assert _row(table, "test accuracy")[-1] == "on better"
    # equal train losses on both sides: no verdict either way
    assert _row(table, "train loss")[-1] == "no clear difference"


def test_lower_evaluations_on_the_off_side_is_off_better() -> None:
    on = _runs("default", [500 + i for i in range(10)], acc=0.9)
    off = _runs("no averaging (ablation)", [200 + i for i in range(10)], acc=0.9)
    assert _row(averaging_effect(on + off), "evals to target")[-1] == "off better"


def test_never_reached_counts_as_over_budget() -> None:
    on = _runs("default", [None] * 5, acc=0.9)
    off = _runs("no averaging (ablation)", [None] * 4 + [10], acc=0.9)
    row = _row(averaging_effect(on + off), "evals to target")
    assert row[2] == "> 1000" and row[3] == "> 1000"


def test_median_difference_interval_contains_the_difference() -> None:
    a = [float(x) for x in range(10, 30)]
    b = [float(x) for x in range(0, 20)]
    diff, low, high = median_difference(a, b, seed=0)
    assert diff == 10.0 and low <= diff <= high and high - low < 20


def test_verdict_follows_the_ranks_when_the_medians_tie() -> None:
    on = _runs("default", [100] * 20, acc=0.99)
    off = _runs("no averaging (ablation)", [100] * 20, acc=0.99)
    for i, r in enumerate(off):
        r["test_acc"] = 0.99 if i < 11 else 0.95  # same median, but off is worse on 9 seeds
    row = _row(averaging_effect(on + off), "test accuracy")
    assert row[4].startswith("+0.00") and row[-1] == "on better"
