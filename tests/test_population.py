"""The fast paths give the same answers as the slow ones: PopulationLoss's batched / vmap /
loop methods, TDOpt trajectories, and the topology at sizes where P x P x D cannot exist."""

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.cluster.hierarchy import linkage
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

import tdopt
from tdopt import TDOpt, topology
from tdopt.optim import _Layout


# ---------------------------------------------------------------- models and losses
class Residual(nn.Module):
    """Not a Sequential: vmap handles it, the batched path does not."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 8), nn.Linear(8, 4)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)) + x.sum(dim=-1, keepdim=True))


class Branchy(nn.Module):
    """Data-dependent control flow: vmap refuses it, the loop fallback runs it."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4)

    def forward(self, x):
        h = self.a(x)
        return h if h.sum() > 0 else -h


class Step(nn.Module):
    def forward(self, x):
        return (x > 0).to(x.dtype)


MODELS = {
    "relu-mlp": (
        lambda: nn.Sequential(nn.Linear(3, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 4)),
        "batched",
    ),
    "mixed-activations": (
        lambda: nn.Sequential(
            nn.Tanh(),
            nn.Linear(3, 7),
            nn.GELU(),
            nn.Sequential(nn.Linear(7, 6), nn.Softplus(), nn.Dropout(0.3)),
            nn.LeakyReLU(0.1),
            nn.Identity(),
            nn.Linear(6, 5, bias=False),
            nn.SiLU(),
            nn.Hardtanh(-0.5, 0.5),
            nn.Linear(5, 4),
            nn.Sigmoid(),
        ),
        "batched",
    ),
    "custom-activation": (lambda: nn.Sequential(nn.Linear(3, 6), Step(), nn.Linear(6, 4)), "vmap"),
    "residual": (Residual, "vmap"),
    "branchy": (Branchy, "loop"),
}
LOSSES = {
    "cross_entropy": lambda y, yr: (F.cross_entropy, y),
    "CrossEntropyLoss(sum)": lambda y, yr: (nn.CrossEntropyLoss(reduction="sum"), y),
    "mse_loss": lambda y, yr: (F.mse_loss, yr),
    "custom": lambda y, yr: (lambda out, t: F.cross_entropy(out, t) + 0.1 * out.pow(2).mean(), y),
}


def _data(dtype=torch.float64, n=200):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g, dtype=dtype)
    return x, torch.randint(0, 4, (n,), generator=g), torch.randn(n, 4, generator=g, dtype=dtype)


def _population(model, members=9, scale=0.5, freeze_first=False):
    params = list(model.parameters())
    if freeze_first:
        params[0].requires_grad_(False)
        params = params[1:]
    layout = _Layout(params)
    g = torch.Generator().manual_seed(1)
    rows = layout.flatten()[None] + scale * torch.randn(members, layout.dim, generator=g, dtype=layout.dtype)
    return layout, rows


def _reference(model, layout, rows, loss_fn, x, targets):
    """One functional_call per member: the definition of the right answer."""
    names = {id(p): n for n, p in model.named_parameters()}
    out = []
    for row in rows:
        values = {names[id(p)]: v[0] for p, v in layout.unflatten_batch(row[None]).items()}
        out.append(loss_fn(functional_call(model, values, (x,)), targets))
    return torch.stack(out)


# ---------------------------------------------------------------- PopulationLoss paths
@pytest.mark.parametrize("loss_name", list(LOSSES))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_every_method_matches_the_per_member_loop(model_name, loss_name):
    factory, expected = MODELS[model_name]
    torch.manual_seed(0)
    model = factory().double().eval()
    x, y, yr = _data()
    loss_fn, targets = LOSSES[loss_name](y, yr)
    layout, rows = _population(model, freeze_first=model_name == "relu-mlp")
    reference = _reference(model, layout, rows, loss_fn, x, targets)
    methods = (
        ["auto", "loop"] + (["vmap"] if expected != "loop" else []) + (["batched"] if expected == "batched" else [])
    )
    for method in methods:
        loss = tdopt.PopulationLoss(model, loss_fn, x, targets, method=method)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with torch.no_grad():
                got = loss.evaluate(layout.unflatten_batch(rows))
        torch.testing.assert_close(got, reference, rtol=1e-11, atol=1e-12, msg=f"method={method}")
        assert loss.last_method == (expected if method == "auto" else method)


def test_batched_path_float32_and_chunks_and_no_aliasing():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 4))
    x, y, _ = _data(torch.float32, n=500)
    layout, rows = _population(model, members=37)
    reference = _reference(model, layout, rows, F.cross_entropy, x, y)
    for chunk in (None, 5, 37, 100):
        loss = tdopt.PopulationLoss(model, F.cross_entropy, x, y, chunk_size=chunk)
        with torch.no_grad():
            first = loss.evaluate(layout.unflatten_batch(rows))
            kept = first.clone()
            loss.evaluate(layout.unflatten_batch(rows.flip(0)))  # reuses the buffers
        assert loss.last_method == "batched"
        torch.testing.assert_close(first, reference, rtol=2e-5, atol=2e-6)
        assert torch.equal(first, kept)  # the returned losses are not views of reused buffers


@pytest.mark.parametrize("n", [500, 499])  # equal tiles, and uneven ones (499 is prime)
@pytest.mark.parametrize("loss_fn", [F.cross_entropy, F.mse_loss])
def test_batched_path_tiles_of_samples(monkeypatch, n, loss_fn):
    from tdopt import _batched

    monkeypatch.setattr(_batched, "TILE_BYTES", 20_000)  # many tiles
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 12), nn.Tanh(), nn.Linear(12, 4), nn.Sigmoid()).double()
    x, y, yr = _data(n=n)
    targets = yr if loss_fn is F.mse_loss else y
    layout, rows = _population(model, members=11)
    loss = tdopt.PopulationLoss(model, loss_fn, x, targets)
    with torch.no_grad():
        got = loss.evaluate(layout.unflatten_batch(rows))
    plan = loss._plan[1]
    count, width = plan.tiles(n, 11, 8)
    assert count > 3 and (width > 0) == (n == 500)
    torch.testing.assert_close(got, _reference(model, layout, rows, loss_fn, x, targets), rtol=1e-11, atol=1e-12)


def _two_class_data(dtype, n):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 3, generator=g, dtype=dtype), torch.randint(0, 2, (n,), generator=g)


@pytest.mark.parametrize("n", [500, 499])  # equal tiles, and uneven ones
@pytest.mark.parametrize("frozen", [None, "first", "last"])
@pytest.mark.parametrize("loss_fn", [F.cross_entropy, nn.CrossEntropyLoss(reduction="sum")])
def test_two_class_cross_entropy_runs_on_the_logit_difference(monkeypatch, n, frozen, loss_fn):
    """Two classes, nothing after the last Linear: one output row (logit 1 - logit 0) and a softplus."""
    from tdopt import _batched

    calls = []
    original = _batched.Plan._binary_loss
    monkeypatch.setattr(_batched.Plan, "_binary_loss", lambda self, *a: calls.append(1) or original(self, *a))
    monkeypatch.setattr(_batched, "TILE_BYTES", 20_000)  # many tiles
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 2)).double()
    params = list(model.parameters())
    if frozen:  # a layer the optimizer does not train: shared (not per member) weights
        for p in params[:2] if frozen == "first" else params[-2:]:
            p.requires_grad_(False)
    layout = _Layout([p for p in params if p.requires_grad])
    g = torch.Generator().manual_seed(1)
    rows = layout.flatten()[None] + 0.5 * torch.randn(13, layout.dim, generator=g, dtype=torch.float64)
    x, y = _two_class_data(torch.float64, n)
    loss = tdopt.PopulationLoss(model, loss_fn, x, y)
    with torch.no_grad():
        got = loss.evaluate(layout.unflatten_batch(rows))
    assert loss.last_method == "batched" and calls
    torch.testing.assert_close(got, _reference(model, layout, rows, loss_fn, x, y), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_two_class_cross_entropy_with_huge_logits(dtype):
    """exp overflows on the fast formula: the stable one takes over (also with a NaN member)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).to(dtype)
    layout = _Layout(list(model.parameters()))
    g = torch.Generator().manual_seed(1)
    rows = layout.flatten()[None] + torch.randn(6, layout.dim, generator=g, dtype=dtype)
    rows[:3] *= 1e3 if dtype == torch.float64 else 200.0  # |logit differences| far above 709 / 88
    rows[3, 0] = math.nan
    x, y = _two_class_data(dtype, 300)
    reference = _reference(model, layout, rows, F.cross_entropy, x, y)
    loss = tdopt.PopulationLoss(model, F.cross_entropy, x, y)
    with torch.no_grad():
        got = loss.evaluate(layout.unflatten_batch(rows))
    assert loss.last_method == "batched"
    assert torch.isnan(got[3]) and torch.isnan(reference[3]) and reference[:3].min() > 10
    tol = {"rtol": 1e-11, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    keep = [0, 1, 2, 4, 5]
    torch.testing.assert_close(got[keep], reference[keep], **tol)


def test_two_classes_with_an_activation_after_the_last_linear_use_the_general_loss(monkeypatch):
    from tdopt import _batched

    monkeypatch.setattr(_batched.Plan, "_binary_loss", lambda *a: pytest.fail("not a logit difference"))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2), nn.Tanh()).double()
    layout, rows = _population(model)
    x, y = _two_class_data(torch.float64, 200)
    loss = tdopt.PopulationLoss(model, F.cross_entropy, x, y)
    with torch.no_grad():
        got = loss.evaluate(layout.unflatten_batch(rows))
    assert loss.last_method == "batched"
    torch.testing.assert_close(got, _reference(model, layout, rows, F.cross_entropy, x, y), rtol=1e-11, atol=1e-12)


def test_named_tensors_match_the_module_generators():
    """One walk gives what modules(), named_parameters() and named_buffers() give: order,
    names, shared modules and parameters listed once, None entries skipped."""
    from tdopt import _batched

    shared = nn.Linear(4, 4)
    inner = nn.Sequential(nn.Linear(3, 4, bias=False), nn.BatchNorm1d(4), shared)
    model = nn.Sequential(inner, nn.ReLU(), shared, nn.Sequential(nn.Linear(4, 2)))
    model.register_buffer("scale", torch.ones(()))
    model.tied = nn.Linear(4, 4)
    model.tied.weight = shared.weight  # a parameter shared between modules
    got = _batched.named_tensors(model)
    assert [id(m) for m in got.modules] == [id(m) for m in model.modules()]
    assert [(n, id(p)) for n, p in got.parameters] == [(n, id(p)) for n, p in model.named_parameters()]
    assert [(n, id(b)) for n, b in got.buffers] == [(n, id(b)) for n, b in model.named_buffers()]


def test_batched_path_follows_new_minibatches_and_in_place_changes():
    """Caches (recognised loss, one-hot targets, buffers) must notice new or modified data,
    even when a new batch tensor reuses the freed one's memory and id."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 4)).double()
    layout, rows = _population(model)
    loss = tdopt.PopulationLoss(model, F.cross_entropy, *_data(n=10)[:2])
    for step in range(6):
        g = torch.Generator().manual_seed(step)
        n = 40 if step % 2 else 64  # batch sizes change too
        loss.inputs = (torch.randn(n, 3, generator=g, dtype=torch.float64),)
        loss.targets = torch.randint(0, 4, (n,), generator=g)
        with torch.no_grad():
            got = loss.evaluate(layout.unflatten_batch(rows))
        torch.testing.assert_close(got, _reference(model, layout, rows, F.cross_entropy, loss.inputs[0], loss.targets))
        loss.targets[:] = (loss.targets + 1) % 4  # in place: bumps the version counter
        with torch.no_grad():
            got = loss.evaluate(layout.unflatten_batch(rows))
        torch.testing.assert_close(got, _reference(model, layout, rows, F.cross_entropy, loss.inputs[0], loss.targets))
        assert loss.last_method == "batched"


def test_batched_method_explains_why_it_cannot_run():
    x, y, _ = _data()
    loss = tdopt.PopulationLoss(Residual().double(), F.cross_entropy, x, y, method="batched")
    layout, rows = _population(loss.model)
    with pytest.raises(ValueError, match="not an nn.Sequential"):
        loss.evaluate(layout.unflatten_batch(rows))
    with pytest.raises(ValueError, match="method"):
        tdopt.PopulationLoss(loss.model, F.cross_entropy, x, y, method="fast")


def test_batched_path_is_skipped_when_it_does_not_apply():
    x, y, _ = _data()
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5)).double()  # training-mode dropout: random
    model.train()
    loss = tdopt.PopulationLoss(model, F.cross_entropy, x, y)
    layout, rows = _population(model)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        loss.evaluate(layout.unflatten_batch(rows))
    assert loss.last_method != "batched"
    model.eval()  # the plan follows the training flag
    with torch.no_grad():
        loss.evaluate(layout.unflatten_batch(rows))
    assert loss.last_method == "batched"
    hooked = nn.Sequential(nn.Linear(3, 4)).double()
    hooked[0].register_forward_hook(lambda m, i, o: o * 2)
    loss = tdopt.PopulationLoss(hooked, F.cross_entropy, x, y)
    layout, rows = _population(hooked)
    with torch.no_grad():
        got = loss.evaluate(layout.unflatten_batch(rows))
    assert loss.last_method == "vmap"
    torch.testing.assert_close(got, _reference(hooked, layout, rows, F.cross_entropy, x, y))


def test_loop_fallback_warns_once_and_then_stays_quiet():
    x, y, _ = _data()
    model = Branchy().double()
    loss = tdopt.PopulationLoss(model, F.cross_entropy, x, y)
    layout, rows = _population(model)
    with pytest.warns(RuntimeWarning, match="vmap cannot evaluate"), torch.no_grad():
        loss.evaluate(layout.unflatten_batch(rows))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            loss.evaluate(layout.unflatten_batch(rows))
    assert loss.last_method == "loop"


def test_ignored_targets_fall_back_to_the_real_cross_entropy():
    x, y, _ = _data()
    y = y.clone()
    y[:5] = -100  # ignore_index: cross_entropy averages over the others
    model = nn.Sequential(nn.Linear(3, 4)).double()
    layout, rows = _population(model)
    loss = tdopt.PopulationLoss(model, F.cross_entropy, x, y)
    with torch.no_grad():
        got = loss.evaluate(layout.unflatten_batch(rows))
    torch.testing.assert_close(got, _reference(model, layout, rows, F.cross_entropy, x, y))


# ---------------------------------------------------------------- TDOpt trajectories
@pytest.mark.parametrize(
    "factory, loss_fn, options",
    [
        (lambda: nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 4)), F.cross_entropy, {}),
        (
            lambda: nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 4)),
            F.mse_loss,
            {"mode": "population", "reevaluate": True},
        ),
        (Residual, F.cross_entropy, {"mode": "population"}),
    ],
)
def test_tdopt_trajectory_with_population_loss_equals_the_closure_loop(factory, loss_fn, options):
    x, y, yr = _data()
    targets = yr if loss_fn is F.mse_loss else y
    runs = []
    for vectorised in (False, True):
        torch.manual_seed(3)
        model = factory().double()
        opt = TDOpt(model.parameters(), lr=0.3, popsize=8, seed=4, **options)
        population_loss = tdopt.PopulationLoss(model, loss_fn, x, targets)
        closure = population_loss if vectorised else (lambda m=model: loss_fn(m(x), targets))
        history = [float(opt.step(closure)) for _ in range(12)]
        runs.append((history, torch.cat([p.detach().flatten() for p in model.parameters()]), opt.evaluations))
    (h_loop, p_loop, e_loop), (h_vec, p_vec, e_vec) = runs
    assert h_loop == pytest.approx(h_vec, rel=1e-10, abs=1e-12)
    torch.testing.assert_close(p_loop, p_vec, rtol=1e-10, atol=1e-12)
    assert e_loop == e_vec


# ---------------------------------------------------------------- topology
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_topology_matches_scipy_in_both_dtypes(dtype):
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(60, 300, generator=g, dtype=torch.float64) * 3 + 50  # far from the origin
    ours = topology.h0_death_times(pts.to(dtype)).double().numpy()
    ref = np.sort(linkage(pts.to(dtype).double().numpy(), method="single")[:, 2])
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol)


def test_gram_is_sliced_over_coordinates(monkeypatch):
    """Slicing the coordinates (tiny slices) gives the same distances and tree as one slice."""
    g = torch.Generator().manual_seed(2)
    pts = torch.randn(40, 1000, generator=g)
    whole = topology.minimum_spanning_tree(pts)
    dist = topology.pairwise_distances(pts)
    monkeypatch.setattr(topology, "_SLICE_ELEMENTS", 40 * 7)  # 7 columns, 40 rows per edge slice at a time
    sliced = topology.minimum_spanning_tree(pts)
    assert torch.equal(whole.sources, sliced.sources) and torch.equal(whole.targets, sliced.targets)
    torch.testing.assert_close(whole.lengths, sliced.lengths, rtol=0, atol=0)
    torch.testing.assert_close(topology.pairwise_distances(pts), dist, rtol=1e-6, atol=1e-4)


def _peak_rss_above(fn):
    """(result, peak RSS above the starting RSS in bytes) on Linux; skips elsewhere."""
    status = Path("/proc/self/status")
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pytest.skip("peak RSS cannot be reset here")

    def field(name):
        return next(int(line.split()[1]) * 1024 for line in status.read_text().splitlines() if line.startswith(name))

    base = field("VmRSS:")
    result = fn()
    return result, field("VmHWM:") - base


def test_no_p_by_p_by_d_allocation():
    """P = 4096, D = 2000 float32: a P x P x D difference array would take 134 GB; the Gram form
    needs the points (33 MB), P^2 float64 matrices (134 MB each) and a slice of the points."""
    p, d = 4096, 2000
    pts = torch.randn(p, d, generator=torch.Generator().manual_seed(0))
    tree, peak = _peak_rss_above(lambda: topology.minimum_spanning_tree(pts))
    assert tree.lengths.shape == (p - 1,)
    assert torch.all(tree.lengths[1:] >= tree.lengths[:-1])
    budget = 4 * p * p * 8 + 2 * p * d * 4 + 256 * 2**20
    assert peak < budget, f"peak {peak / 2**20:.0f} MiB"
    assert p * p * d * 4 > 100 * budget


def test_exact_torch_quantile_replacement():
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 7, 31, 64):
        values = torch.rand(n, generator=g, dtype=torch.float64) * 10
        for q in (0.0, 0.1, 0.25, 0.5, 0.77, 1.0):
            assert topology.auto_radius(values.sort().values, "quantile", q) == float(torch.quantile(values, q))
    assert math.isnan(topology.auto_radius(torch.tensor([1.0, math.nan]), "quantile", 0.5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_topology_on_cuda_matches_cpu(dtype):
    pts = torch.randn(300, 5000, generator=torch.Generator().manual_seed(0)).to(dtype)
    cpu = topology.minimum_spanning_tree(pts)
    gpu = topology.minimum_spanning_tree(pts.cuda())
    assert gpu.lengths.device.type == "cuda"
    torch.testing.assert_close(cpu.lengths, gpu.lengths.cpu(), rtol=1e-5, atol=1e-5)
    radius = float(cpu.lengths[150] + cpu.lengths[151]) / 2  # away from any edge length
    labels = topology.components(pts.cuda(), radius, gpu)
    assert labels.device.type == "cuda"
    assert torch.equal(labels.cpu(), topology.components(pts, radius, cpu))


def _batched_on_cuda(model: nn.Module, rows: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the population ``rows`` with ``model`` moved to CUDA, by PopulationLoss's
    batched path (asserted), back on the CPU."""
    model.cuda()
    layout = _Layout(list(model.parameters()))
    loss = tdopt.PopulationLoss(model, F.cross_entropy, x.cuda(), y.cuda())
    with torch.no_grad():
        got = loss.evaluate(layout.unflatten_batch(rows.cuda()))
    assert loss.last_method == "batched"
    return got.cpu()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batched_population_loss_on_cuda():
    x, y, _ = _data(torch.float32, n=300)
    model = nn.Sequential(nn.Linear(3, 10), nn.ReLU(), nn.Linear(10, 4))
    layout, rows = _population(model)
    reference = _reference(model, layout, rows, F.cross_entropy, x, y)
    torch.testing.assert_close(_batched_on_cuda(model, rows, x, y), reference, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_two_class_batched_loss_on_cuda():
    x, y = _two_class_data(torch.float32, 300)
    model = nn.Sequential(nn.Linear(3, 10), nn.ReLU(), nn.Linear(10, 2))
    layout, rows = _population(model)
    rows[0] *= 300.0  # huge logits: the stable form (always used off the CPU)
    reference = _reference(model, layout, rows, F.cross_entropy, x, y)
    torch.testing.assert_close(_batched_on_cuda(model, rows, x, y), reference, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- the speed benchmark
def test_speed_benchmark_quick_run_writes_json_plots_and_docs(tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    from benchmarks import speed

    assert speed.main(["--quick", "--threads", "1", "--no-cma", "--rounds", "2", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "speed_cpu.json").read_text())
    assert {r["P"] for r in result["evaluation"]} == set(speed.QUICK_EVAL_SIZES)
    for row in result["evaluation"]:
        assert row["max_abs_diff_vs_loop"]["batched"] < 1e-4
    phases = result["phases"]
    assert {(r["P"], r["D"]) for r in phases} == {(p, d) for p in speed.QUICK_P for d in speed.QUICK_D}
    for row in phases:
        assert row["step_s"] > 0 and row["topology_s"] > 0 and row["threads"] == 1
    paths = [p for p in speed.STEP_PATHS if p != "compiled" or speed._core.compiled_kernels() is not None]
    assert [(r["P"], r["path"]) for r in result["step_paths"]] == [(p, path) for p in speed.QUICK_P for path in paths]
    for row in result["step_paths"]:
        assert row["D"] == speed.MLP_DIM and row["topology_s"] > 0  # the compiled topology kernel is timed too
        assert 0 < row["optimizer_evaluate_s"] < row["optimizer_step_s"]
    assert result["machine"]["small_step_path"] == paths[0]
    for name in ("evaluation", "phases", "cma"):
        assert (tmp_path / f"speed_cpu_{name}.png").stat().st_size > 0
    text = (tmp_path / "performance.md").read_text()
    assert "Evaluation throughput" in text and "phase by phase" in text
    assert "the three CPU paths" in text and "Outside the evaluation at P = 64" in text


def test_speed_docs_fit_scaling_laws(tmp_path):
    from benchmarks import speed

    rows = []
    for p in (16, 64, 256):
        for d in (10_000, 100_000, 1_000_000):
            t = 3e-12 * p * p * d + 1e-7 * p * p
            row = {
                "method": "tdopt",
                "P": p,
                "D": d,
                "threads": 1,
                "repeats": 3,
                "state_bytes": 4 * p * d,
                "non_evaluate_fraction": 0.5,
            }
            for ph, value in zip(speed.PHASES, (1e-9 * p * d, 1e-3, t, 2e-9 * p * d), strict=True):
                row[ph + "_s"] = value
                row[ph + "_bytes"] = 5 * p * d
            row["step_s"] = sum(row[ph + "_s"] for ph in speed.PHASES)
            rows.append(row)
    fit = speed.fit_topology(rows)
    assert fit["a_P2D"] == pytest.approx(3e-12, rel=1e-3) and fit["b_P2"] == pytest.approx(1e-7, rel=1e-3)
    assert fit["alpha"] == pytest.approx(2.0, abs=0.05)
    result = {"device": "cpu", "machine": speed.machine_info(torch.device("cpu")), "phases": rows, "skipped": []}
    (tmp_path / "speed_cpu.json").write_text(json.dumps(result))
    path = speed.write_docs(tmp_path, tmp_path / "performance.md")
    text = path.read_text()
    assert "P^2 * D" in text and "Largest problems in 24 GiB" in text
