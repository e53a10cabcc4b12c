"""tdopt's benchmark suite: ``python -m benchmarks`` (``make bench``).

Modules:

* :mod:`benchmarks.tasks`: the tasks (``get_task(name)``, ``TASKS``, ``register_task``);
* :mod:`benchmarks.optimizers`: the optimizer registry (``METHODS``, ``register_method``) and
  every method's hyperparameters, in one place; :mod:`benchmarks.adapters`: the adapters;
* :mod:`benchmarks.runner`: ``run_one(task, optimizer, seed, budget, options=None,
  report=None) -> dict`` and the resumable JSON-lines result store;
* :mod:`benchmarks.report`: tables, plots and ``RESULTS.md`` from a results directory;
  :mod:`benchmarks.compare`: a run's tables next to the published ones;
* :mod:`benchmarks.references`: the reference figures (random networks, HGB, k-NN, SGD
  on the tiny net), saved as ``benchmarks/results/references.json``.

``python -m benchmarks tune ...`` and ``python -m benchmarks speed ...`` dispatch to
``benchmarks.tune.main(argv)`` and ``benchmarks.speed.main(argv)``.
"""
