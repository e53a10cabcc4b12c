"""PopulationLoss computes, for every member, what ``loss_fn(model(x), targets)`` computes with
that member's weights: every method it accepts (batched, vmap, loop), over model structures
(shared activations, a Linear used twice, nested and non-Sequential models, Dropout in eval
mode), dtypes, chunk sizes and losses. The reference loads each member's weights into a deep
copy of the model and calls it: nothing of tdopt's (nor torch.func's) machinery."""

import copy
import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

import tdopt
from tdopt import batched_mlp

METHODS = ["auto", "batched", "vmap", "loop"]
CLASSES = 3


# ---------------------------------------------------------------- reference and helpers
def population(params, members=5, scale=0.5, seed=1):
    """``{param: (members, *shape)}`` around the parameters' current values."""
    g = torch.Generator().manual_seed(seed)
    return {
        p: p.detach()[None] + scale * torch.randn(members, *p.shape, generator=g, dtype=torch.float64).to(p.dtype)
        for p in params
    }


def reference(model, batched, loss_fn, inputs, targets):
    """Each member's loss: its weights copied into a deep copy of the model, then model(x)."""
    names = {id(p): n for n, p in model.named_parameters()}
    members = next(iter(batched.values())).shape[0]
    out = []
    for i in range(members):
        clone = copy.deepcopy(model)
        values = {names[id(p)]: v[i] for p, v in batched.items()}
        with torch.no_grad():
            for name, p in clone.named_parameters():
                if name in values:
                    p.copy_(values[name])
            out.append(loss_fn(clone(*inputs), targets))
    return torch.stack(out)


def snapshot(model):
    return [(id(p), type(p), p.detach().clone()) for p in model.parameters()]


def assert_model_untouched(model, before):
    after = snapshot(model)
    assert [(i, t) for i, t, _ in after] == [(i, t) for i, t, _ in before], "the model's parameters were replaced"
    for (_, _, a), (_, _, b) in zip(after, before, strict=True):
        assert torch.equal(a, b), "the model's parameter values changed"


def tolerance(dtype):
    return {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-4, "atol": 2e-5}


def data(dtype=torch.float64, n=48, features=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    yr = torch.randn(n, CLASSES, generator=g, dtype=torch.float64).to(dtype)
    return x, y, yr


LOSSES = {
    "cross_entropy": (F.cross_entropy, "class"),
    "CrossEntropyLoss(sum)": (nn.CrossEntropyLoss(reduction="sum"), "class"),
    "mse_loss": (F.mse_loss, "real"),
    "MSELoss(sum)": (nn.MSELoss(reduction="sum"), "real"),
    "custom": (lambda out, t: F.cross_entropy(out, t) + 0.1 * out.pow(2).mean(), "class"),
}


def run_method(model, loss_fn, inputs, targets, batched, method, chunk_size=None, refusal=()):
    """``(losses, last_method)``, or None when the method refuses the model: the batched method
    with a ValueError, or with one of ``refusal``."""
    loss = tdopt.PopulationLoss(model, loss_fn, inputs, targets, chunk_size=chunk_size, method=method)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            got = loss.evaluate(batched)
        except refusal:
            return None
        except ValueError:
            if method == "batched":
                return None
            raise
    return got, loss.last_method


# ---------------------------------------------------------------- models
class Residual(nn.Module):
    """Not a Sequential: vmap handles it, the batched path does not."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, CLASSES)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)) + x.sum(dim=-1, keepdim=True))


class Branchy(nn.Module):
    """Data-dependent control flow: vmap refuses it, the loop runs it."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, CLASSES)

    def forward(self, x):
        h = self.a(x)
        return h if h.sum() > 0 else -h


class TwoBranches(nn.Module):
    """Two inputs, two branches, a buffer."""

    def __init__(self):
        super().__init__()
        self.left, self.right = nn.Linear(4, 5), nn.Linear(4, 5)
        self.head = nn.Linear(5, CLASSES)
        self.register_buffer("gain", torch.tensor(1.5))

    def forward(self, x, z):
        return self.head(F.relu(self.left(x)) * self.gain + torch.sigmoid(self.right(z)))


class Step(nn.Module):
    def forward(self, x):
        return (x > 0).to(x.dtype)


def tied_in_two_modules():
    """Two Linear modules sharing one weight (weight tying, as in language models)."""
    a, b = nn.Linear(5, 5), nn.Linear(5, 5)
    b.weight = a.weight
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), a, nn.ReLU(), b, nn.Linear(5, CLASSES))


def shared_activation():
    act = nn.Tanh()
    return nn.Sequential(nn.Linear(4, 8), act, nn.Linear(8, 8), act, nn.Linear(8, CLASSES))


def linear_used_twice():
    lin = nn.Linear(8, 8)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), lin, nn.Tanh(), lin, nn.Linear(8, CLASSES))


def sequential_used_twice():
    block = nn.Sequential(nn.Linear(6, 6), nn.ELU())
    return nn.Sequential(nn.Linear(4, 6), block, block, nn.Linear(6, CLASSES))


MODELS = {  # name: (factory, what method="auto" runs)
    "relu-mlp": (
        lambda: nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 3)),
        "batched",
    ),
    "nested-mixed": (
        lambda: nn.Sequential(
            nn.Tanh(),
            nn.Linear(4, 7),
            nn.GELU(),
            nn.Sequential(nn.Linear(7, 6), nn.Softplus(), nn.Dropout(0.3)),
            nn.LeakyReLU(0.1),
            nn.Identity(),
            nn.Sequential(nn.Sequential(nn.Linear(6, 5, bias=False), nn.SiLU())),
            nn.Hardtanh(-0.5, 0.5),
            nn.Flatten(),
            nn.Linear(5, 3),
            nn.Sigmoid(),
        ),
        "batched",
    ),
    "shared-activation": (shared_activation, "batched"),
    "custom-activation": (lambda: nn.Sequential(nn.Linear(4, 6), Step(), nn.Linear(6, 3)), "vmap"),
    "residual": (Residual, "vmap"),
    "branchy": (Branchy, "loop"),
}
# A module registered twice (its parameters appear once in named_parameters) or two modules
# sharing a weight.
SHARED_PARAMETER_MODELS = {
    "linear-used-twice": linear_used_twice,
    "sequential-used-twice": sequential_used_twice,
    "tied-weight-in-two-linears": tied_in_two_modules,
}


# ---------------------------------------------------------------- every method against the reference
@pytest.mark.parametrize("loss_name", list(LOSSES))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_every_method_matches_the_per_member_model(model_name, loss_name):
    factory, expected = MODELS[model_name]
    torch.manual_seed(0)
    model = factory().double().eval()
    x, y, yr = data()
    loss_fn, kind = LOSSES[loss_name]
    targets = y if kind == "class" else yr
    batched = population(list(model.parameters()))
    want = reference(model, batched, loss_fn, (x,), targets)
    before = snapshot(model)
    ran = []
    for method in METHODS:
        refusal = (RuntimeError,) if method == "vmap" and expected == "loop" else ()
        result = run_method(model, loss_fn, x, targets, batched, method, refusal=refusal)
        if result is None:
            assert expected != "batched" and method != "auto", f"{method} refused a model it should run"
            continue
        got, last = result
        ran.append(method)
        torch.testing.assert_close(got, want, **tolerance(torch.float64), msg=f"method={method}")
        assert last == (expected if method == "auto" else method)
        assert_model_untouched(model, before)
    assert {"auto", "loop"} <= set(ran)


@pytest.mark.parametrize("model_name", ["linear-used-twice", "sequential-used-twice"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shared_modules_batched(model_name, dtype):
    """The batched path computes the network model(x) computes (issue 16: it once skipped the
    second use of a module) and is the one that runs."""
    torch.manual_seed(0)
    model = SHARED_PARAMETER_MODELS[model_name]().to(dtype).eval()
    x, y, _ = data(dtype)
    batched = population(list(model.parameters()))
    want = reference(model, batched, F.cross_entropy, (x,), y)
    before = snapshot(model)
    for method in ("auto", "batched"):
        got, last = run_method(model, F.cross_entropy, x, y, batched, method)
        assert last == "batched"
        torch.testing.assert_close(got, want, **tolerance(dtype))
        assert_model_untouched(model, before)


@pytest.mark.parametrize("method", ["vmap", "loop"])
@pytest.mark.parametrize("model_name", ["linear-used-twice", "sequential-used-twice"])
def test_shared_modules_vmap_and_loop_leave_the_model_intact(model_name, method):
    torch.manual_seed(0)
    model = SHARED_PARAMETER_MODELS[model_name]().double().eval()
    x, y, _ = data()
    batched = population(list(model.parameters()))
    want = reference(model, batched, F.cross_entropy, (x,), y)
    before = snapshot(model)
    for _ in range(2):  # the second call sees what the first left behind
        got, _ = run_method(model, F.cross_entropy, x, y, batched, method)
        assert_model_untouched(model, before)
        torch.testing.assert_close(got, want, **tolerance(torch.float64))


def tied_case():
    """The tied-weight model in float64, its data, a population and the reference losses."""
    torch.manual_seed(0)
    model = tied_in_two_modules().double()
    x, y, _ = data()
    batched = population(list(model.parameters()))
    return model, x, y, batched, reference(model, batched, F.cross_entropy, (x,), y)


@pytest.mark.parametrize("method", ["auto", "batched"])
def test_tied_weight_in_two_modules_batched(method):
    """A weight shared by two Linear modules is still a Sequential of Linears: the batched path
    accepts it (method="auto" picks it) and computes what model(x) computes."""
    model, x, y, batched, want = tied_case()
    before = snapshot(model)
    got, last = run_method(model, F.cross_entropy, x, y, batched, method)
    assert last == "batched"
    torch.testing.assert_close(got, want, **tolerance(torch.float64))
    assert_model_untouched(model, before)


@pytest.mark.parametrize("method", ["vmap", "loop"])
def test_tied_weight_in_two_modules_vmap_and_loop(method):
    model, x, y, batched, want = tied_case()
    before = snapshot(model)
    got, _ = run_method(model, F.cross_entropy, x, y, batched, method)
    torch.testing.assert_close(got, want, **tolerance(torch.float64))
    assert_model_untouched(model, before)


# Random Sequential structures the batched path accepts: Linear layers and elementwise
# activations, activations reused, a square Linear reused, nested Sequentials, Dropout (eval),
# Identity and Flatten.
ACTIVATIONS = [
    nn.ReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.Softplus,
    nn.Hardtanh,
    nn.LeakyReLU,
    nn.Mish,
    nn.Hardswish,
    nn.SELU,
    nn.Softsign,
    nn.LogSigmoid,
]


@st.composite
def mlp_structures(draw, reuse_linear=True):
    width = 4
    layers: list[nn.Module] = []
    acts: list[nn.Module] = []
    square: list[nn.Linear] = []
    for _ in range(draw(st.integers(1, 5))):
        choice = draw(st.sampled_from(["linear", "reuse-linear", "act", "reuse-act", "noop", "nested"]))
        if choice == "reuse-linear" and square and reuse_linear:
            lin = draw(st.sampled_from(square))
            if lin.in_features == width:
                layers.append(lin)
                continue
        if choice in ("reuse-act",) and acts:
            layers.append(draw(st.sampled_from(acts)))
        elif choice == "act":
            act = draw(st.sampled_from(ACTIVATIONS))()
            acts.append(act)
            layers.append(act)
        elif choice == "noop":
            layers.append(draw(st.sampled_from([nn.Identity(), nn.Dropout(0.5), nn.Flatten()])))
        else:
            out = draw(st.one_of(st.just(width), st.integers(2, 7)))  # square layers can be reused
            lin = nn.Linear(width, out, bias=draw(st.booleans()))
            if out == width:
                square.append(lin)
            act = draw(st.sampled_from(ACTIVATIONS))()
            acts.append(act)
            block = [lin, act]
            layers.append(nn.Sequential(*block) if choice == "nested" else lin)
            if choice != "nested":
                layers.append(act)
            width = out
    layers.append(nn.Linear(width, CLASSES))
    if draw(st.booleans()):
        layers.append(draw(st.sampled_from(ACTIVATIONS))())
    return nn.Sequential(*layers)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mlp_structures(),
    st.sampled_from([torch.float32, torch.float64]),
    st.sampled_from([None, 1, 2, 5]),
    st.sampled_from(list(LOSSES)),
    st.integers(0, 2**16),
    st.booleans(),
)
def test_random_sequential_structures_batched_equals_model(model, dtype, chunk_size, loss_name, seed, freeze_first):
    torch.manual_seed(seed)
    model = model.to(dtype).eval()
    for m in model.modules():  # fresh weights for this seed
        if isinstance(m, nn.Linear):
            m.reset_parameters()
    params = list(model.parameters())
    if freeze_first:  # a layer the optimizer does not train: shared by all members
        params = params[1:]
    x, y, yr = data(dtype, seed=seed)
    loss_fn, kind = LOSSES[loss_name]
    targets = y if kind == "class" else yr
    batched = population(params, members=5, seed=seed)
    want = reference(model, batched, loss_fn, (x,), targets)
    before = snapshot(model)
    for method in ("auto", "batched"):
        got, last = run_method(model, loss_fn, x, targets, batched, method, chunk_size)
        assert last == "batched"
        torch.testing.assert_close(got, want, **tolerance(dtype))
        assert_model_untouched(model, before)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mlp_structures(reuse_linear=False), st.sampled_from([None, 2]), st.integers(0, 2**16))
def test_random_sequential_structures_vmap_and_loop_equal_model(model, chunk_size, seed):
    torch.manual_seed(seed)
    model = model.double().eval()
    x, y, _ = data(seed=seed)
    batched = population(list(model.parameters()), members=4, seed=seed)
    want = reference(model, batched, F.cross_entropy, (x,), y)
    for method in ("vmap", "loop"):
        got, last = run_method(model, F.cross_entropy, x, y, batched, method, chunk_size)
        assert last == method
        torch.testing.assert_close(got, want, **tolerance(torch.float64))


def test_two_inputs_and_buffers():
    torch.manual_seed(0)
    model = TwoBranches().double()
    x, y, _ = data()
    z = torch.randn_like(x)
    batched = population(list(model.parameters()))
    want = reference(model, batched, F.cross_entropy, (x, z), y)
    for method in ("auto", "vmap", "loop"):
        got, last = run_method(model, F.cross_entropy, (x, z), y, batched, method)
        torch.testing.assert_close(got, want, **tolerance(torch.float64))
        assert last == ("vmap" if method == "auto" else method)
    assert run_method(model, F.cross_entropy, (x, z), y, batched, "batched") is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_path_chunks_and_returned_losses_are_not_reused_buffers(dtype):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3)).to(dtype)
    x, y, _ = data(dtype, n=300)
    batched = population(list(model.parameters()), members=37)
    flipped = {p: v.flip(0) for p, v in batched.items()}
    want = reference(model, batched, F.cross_entropy, (x,), y)
    for chunk in (None, 5, 37, 100):
        loss = tdopt.PopulationLoss(model, F.cross_entropy, x, y, chunk_size=chunk)
        with torch.no_grad():
            first = loss.evaluate(batched)
            kept = first.clone()
            loss.evaluate(flipped)  # reuses the buffers
        assert loss.last_method == "batched"
        torch.testing.assert_close(first, want, **tolerance(dtype))
        assert torch.equal(first, kept)


@pytest.mark.parametrize("n", [500, 499])  # equal tiles, and uneven ones (499 is prime)
@pytest.mark.parametrize("loss_fn", [F.cross_entropy, F.mse_loss])
def test_batched_path_over_many_tiles_of_samples(monkeypatch, n, loss_fn):
    monkeypatch.setattr(batched_mlp, "TILE_BYTES", 20_000)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 12), nn.Tanh(), nn.Linear(12, 3), nn.Sigmoid()).double()
    x, y, yr = data(n=n)
    targets = yr if loss_fn is F.mse_loss else y
    batched = population(list(model.parameters()), members=11)
    loss = tdopt.PopulationLoss(model, loss_fn, x, targets)
    with torch.no_grad():
        got = loss.evaluate(batched)
    assert loss.last_method == "batched"
    torch.testing.assert_close(got, reference(model, batched, loss_fn, (x,), targets), **tolerance(torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("frozen", [None, "first", "last"])
def test_two_class_cross_entropy_including_huge_logits_and_nan_members(dtype, frozen):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)).to(dtype)
    params = list(model.parameters())
    trained = {None: params, "first": params[2:], "last": params[:2]}[frozen]
    batched = population(trained, members=6)
    for v in batched.values():
        v[:3] *= 1e3 if dtype == torch.float64 else 200.0  # |logit differences| far above 709 / 88
        v[3].view(-1)[0] = math.nan
    g = torch.Generator().manual_seed(3)
    x = torch.randn(300, 4, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randint(0, 2, (300,), generator=g)
    want = reference(model, batched, F.cross_entropy, (x,), y)
    got, last = run_method(model, F.cross_entropy, x, y, batched, "auto")
    assert last == "batched"
    assert torch.isnan(got[3]) and torch.isnan(want[3])
    keep = [0, 1, 2, 4, 5]
    torch.testing.assert_close(got[keep], want[keep], **tolerance(dtype))


# ---------------------------------------------------------------- when the batched path applies
def test_training_mode_dropout_is_not_batched_and_eval_mode_is():
    x, y, _ = data()
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 3)).double().train()
    batched = population(list(model.parameters()))
    loss = tdopt.PopulationLoss(model, F.cross_entropy, x, y)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        loss.evaluate(batched)
    assert loss.last_method != "batched"
    model.eval()  # the plan follows the training flag
    with torch.no_grad():
        got = loss.evaluate(batched)
    assert loss.last_method == "batched"
    torch.testing.assert_close(got, reference(model, batched, F.cross_entropy, (x,), y), **tolerance(torch.float64))


def test_hooks_make_it_fall_back_and_are_honoured():
    x, y, _ = data()
    model = nn.Sequential(nn.Linear(4, 3)).double()
    model[0].register_forward_hook(lambda m, i, o: o * 2)
    batched = population(list(model.parameters()))
    got, last = run_method(model, F.cross_entropy, x, y, batched, "auto")
    assert last == "vmap"
    torch.testing.assert_close(got, reference(model, batched, F.cross_entropy, (x,), y), **tolerance(torch.float64))


def test_the_plan_follows_changes_to_the_model_and_the_data():
    """New minibatches (even reusing freed memory), in-place target changes, new values of
    untrained weights, a replaced module and a changed activation attribute are all seen."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.LeakyReLU(0.1), nn.Linear(6, 3)).double()
    params = list(model.parameters())
    batched = population(params[2:])  # the first Linear is not trained: fixed weights
    loss = tdopt.PopulationLoss(model, F.cross_entropy, *data(n=10)[:2])
    for step in range(6):
        g = torch.Generator().manual_seed(step)
        n = 40 if step % 2 else 64
        loss.inputs = (torch.randn(n, 4, generator=g, dtype=torch.float64),)
        loss.targets = torch.randint(0, 3, (n,), generator=g)
        if step == 2:
            with torch.no_grad():
                params[0].mul_(-2.0)
        if step == 3:
            model[1].negative_slope = 0.5
        if step == 4:
            model[1] = nn.Tanh()
        for _ in range(2):
            with torch.no_grad():
                got = loss.evaluate(batched)
            assert loss.last_method == "batched"
            want = reference(model, batched, F.cross_entropy, loss.inputs, loss.targets)
            torch.testing.assert_close(got, want, **tolerance(torch.float64))
            loss.targets[:] = (loss.targets + 1) % 3  # in place: bumps the version counter


def test_batched_method_explains_why_it_cannot_run():
    x, y, _ = data()
    loss = tdopt.PopulationLoss(Residual().double(), F.cross_entropy, x, y, method="batched")
    with pytest.raises(ValueError, match="not an nn.Sequential"):
        loss.evaluate(population(list(loss.model.parameters())))


def test_loop_fallback_warns_once_and_then_stays_quiet():
    x, y, _ = data()
    model = Branchy().double()
    loss = tdopt.PopulationLoss(model, F.cross_entropy, x, y)
    batched = population(list(model.parameters()))
    with pytest.warns(RuntimeWarning, match="vmap cannot evaluate"), torch.no_grad():
        loss.evaluate(batched)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            loss.evaluate(batched)
    assert loss.last_method == "loop"


def test_ignored_targets_fall_back_to_the_real_cross_entropy():
    x, y, _ = data()
    y = y.clone()
    y[:5] = -100  # ignore_index: cross_entropy averages over the others
    model = nn.Sequential(nn.Linear(4, 3)).double()
    batched = population(list(model.parameters()))
    got, _ = run_method(model, F.cross_entropy, x, y, batched, "auto")
    torch.testing.assert_close(got, reference(model, batched, F.cross_entropy, (x,), y), **tolerance(torch.float64))


def test_calling_it_is_the_loss_of_the_current_weights():
    x, y, _ = data()
    model = nn.Sequential(nn.Linear(4, 3)).double()
    loss = tdopt.PopulationLoss(model, F.cross_entropy, x, y)
    torch.testing.assert_close(loss(), F.cross_entropy(model(x), y), rtol=0, atol=0)


# ---------------------------------------------------------------- errors
def float_loss(out, t):
    return float(F.cross_entropy(out, t))


def constant_float_loss(out, t):
    return 0.5


# Every (model, method) pair in which the method runs the model: method="batched" refuses the
# non-Sequential models and method="vmap" the data-dependent one before loss_fn is ever called
# (test_every_method_matches_the_per_member_model covers those refusals).
RUNNING_PAIRS = [
    ("relu-mlp", "auto"),
    ("relu-mlp", "batched"),
    ("relu-mlp", "vmap"),
    ("relu-mlp", "loop"),
    ("residual", "auto"),
    ("residual", "vmap"),
    ("residual", "loop"),
    ("branchy", "auto"),
    ("branchy", "loop"),
]


@pytest.mark.parametrize("loss_fn", [float_loss, constant_float_loss])
@pytest.mark.parametrize("model_name, method", RUNNING_PAIRS)
def test_a_loss_fn_returning_a_float_raises_type_error(loss_fn, model_name, method):
    model = MODELS[model_name][0]().double()
    x, y, _ = data()
    loss = tdopt.PopulationLoss(model, loss_fn, x, y, method=method)
    # method="vmap" cannot even call float() on a batched tensor: torch's RuntimeError says so
    expected = (TypeError, RuntimeError) if method == "vmap" and loss_fn is float_loss else TypeError
    with pytest.raises(expected, match="loss_fn|item"), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        loss.evaluate(population(list(model.parameters())))


@pytest.mark.parametrize("method", ["auto", "vmap", "loop"])
def test_a_loss_fn_returning_one_value_per_sample_raises_value_error(method):
    model = nn.Sequential(nn.Linear(4, 3)).double()
    x, y, _ = data()
    loss = tdopt.PopulationLoss(model, nn.CrossEntropyLoss(reduction="none"), x, y, method=method)
    with pytest.raises(ValueError, match="scalar"), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        loss.evaluate(population(list(model.parameters())))


def test_input_dtype_mismatch_raises_at_construction_without_a_warning():
    model = nn.Sequential(nn.Linear(4, 3)).double()
    x, y, _ = data(torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TypeError, match="dtype"):
            tdopt.PopulationLoss(model, F.cross_entropy, x, y)
        with pytest.raises(TypeError, match="dtype"):
            tdopt.PopulationLoss(TwoBranches().double(), F.cross_entropy, (x.double(), x), y)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(model=lambda x: x), TypeError),
        (dict(loss_fn="cross_entropy"), TypeError),
        (dict(chunk_size=0), ValueError),
        (dict(chunk_size=1.5), TypeError),
        (dict(chunk_size=True), TypeError),
        (dict(method="fast"), ValueError),
    ],
)
def test_invalid_arguments(kwargs, error):
    x, y, _ = data()
    args = dict(model=nn.Linear(4, 3).double(), loss_fn=F.cross_entropy, inputs=x, targets=y) | kwargs
    with pytest.raises(error):
        tdopt.PopulationLoss(**args)


def test_parameters_outside_the_model_and_disagreeing_sizes_rejected():
    model = nn.Linear(4, 3).double()
    x, y, _ = data()
    loss = tdopt.PopulationLoss(model, F.cross_entropy, x, y)
    stranger = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="not in its model"):
        loss.evaluate({model.weight: model.weight.detach()[None], stranger: torch.zeros(1, 2, dtype=torch.float64)})
    with pytest.raises(ValueError, match="population size"):
        loss.evaluate(
            {model.weight: model.weight.detach()[None].repeat(3, 1, 1), model.bias: model.bias.detach()[None]}
        )
