"""TDOpt's persistence diagnostics against scipy, and the radius sweep end to end at a tiny budget."""

import numpy as np
import pytest
import torch
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

import tdopt
from benchmarks.studies import radius, radius_report


@pytest.mark.parametrize(("popsize", "options"), [(8, {}), (16, {"quantile": 0.25}), (32, {"radius": "gap"})])
def test_death_times_are_scipy_single_linkage_heights(popsize, options):
    """The selected children are recomputed here from what the closure saw: the step's rows are
    the centre, then the children; the selected are the popsize // 2 children of lowest loss."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
    x, y = torch.randn(64, 3), torch.randn(64, 1)
    opt = tdopt.TDOpt(model.parameters(), popsize=popsize, seed=1, **options)
    seen = []

    def closure():
        loss = torch.nn.functional.mse_loss(model(x), y)
        seen.append((torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double(), float(loss.detach())))
        return loss

    for _ in range(6):
        seen.clear()
        opt.step(closure)
        children = sorted(seen[1:], key=lambda row: row[1])[: popsize // 2]
        points = torch.stack([row[0] for row in children]).numpy()
        tree = linkage(pdist(points), "single")
        expected = np.sort(tree[:, 2])
        np.testing.assert_allclose(opt.death_times.numpy(), expected, rtol=1e-6, atol=0)
        # the radius the rule picked and the component it averaged follow from the same heights
        if options.get("radius") == "gap":
            r = expected[np.argmax(np.diff(expected))]
        else:
            r = np.quantile(expected, options.get("quantile", tdopt.es.QUANTILE))
        assert opt.radius == pytest.approx(r, rel=1e-6)
        labels = fcluster(tree, t=r, criterion="distance")
        assert opt.component_size == np.bincount(labels).max()


def test_death_times_empty_before_first_step():
    opt = tdopt.TDOpt([torch.zeros(3, requires_grad=True)], seed=0)
    assert opt.death_times.numel() == 0


def test_sweep_runs_end_to_end(tmp_path):
    args = ["--tasks", "two-moons", "--popsizes", "8", "--seeds", "1", "--budget", "40"]
    radius.main([*args, "--overhead-steps", "2", "--out", str(tmp_path)])
    records = [r for r in radius.ResultStore(tmp_path / "runs.jsonl").load()]
    assert {r["variant"] for r in records} == set(radius.RULES) | {radius.fixed_name(f) for f in radius.FACTORS}
    assert all(r["evals"] <= 40 and 0 < r["diag"]["component_frac"] <= 1 for r in records)
    text = (tmp_path / "RADIUS.md").read_text()
    assert "## Verdict" in text and "two-moons, popsize 8" in text
    for name in ("radius_two-moons.png", "persistence.png", "overhead.json"):
        assert (tmp_path / name).exists()
    assert "### Does the radius matter?" in radius_report.readme_section(tmp_path)
    # resuming runs nothing new
    assert radius.sweep(["two-moons"], [8], 1, 40, tmp_path) == 0
