"""Two-moons smoke test: the 2-10-10-2 MLP trained by TDOpt generalises."""

import pytest
import torch
from torch import nn

import tdopt

sklearn = pytest.importorskip("sklearn", reason="scikit-learn comes with the bench extra (setup.sh installs it)")
from sklearn.datasets import make_moons  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402


def two_moons():
    x, y = make_moons(n_samples=2000, noise=0.1, random_state=0)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.5, stratify=y, random_state=0)
    as_x = lambda a: torch.tensor(a, dtype=torch.float32)
    return as_x(x_train), torch.tensor(y_train), as_x(x_test), torch.tensor(y_test)


@pytest.mark.parametrize("seed", [0, 1])
def test_tdopt_reaches_97_percent_on_two_moons(seed):
    x_train, y_train, x_test, y_test = two_moons()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 2))
    opt = tdopt.TDOpt(model.parameters(), seed=seed)  # the defaults
    loss = tdopt.PopulationLoss(model, nn.functional.cross_entropy, x_train, y_train)
    while opt.evaluations < 4000:
        opt.step(loss)
    with torch.no_grad():
        accuracy = (model(x_test).argmax(dim=1) == y_test).float().mean().item()
    assert accuracy >= 0.97
