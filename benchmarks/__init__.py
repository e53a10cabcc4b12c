"""tdopt's benchmark suite: ``python -m benchmarks`` (``make bench``).

Modules:

* :mod:`benchmarks.tasks`: the tasks (``get_task(name)``, ``TASK_NAMES``);
* :mod:`benchmarks.optimizers`: the optimizer adapters and their hyperparameters
  (``HYPERPARAMS``, all in one place);
* :mod:`benchmarks.runner`: ``run_one(task, optimizer, seed, budget, options=None,
  report=None) -> dict`` and the resumable JSON-lines result store;
* :mod:`benchmarks.report`: tables, plots and ``RESULTS.md`` from a results directory;
* :mod:`benchmarks.references`: the reference figures (random networks, HGB, k-NN, SGD
  on the tiny net), saved as ``benchmarks/results/references.json``.

``python -m benchmarks tune ...`` and ``python -m benchmarks speed ...`` dispatch to
``benchmarks.tune.main(argv)`` and ``benchmarks.speed.main(argv)``.
"""
