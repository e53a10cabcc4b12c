"""tdopt's benchmark suite: ``python -m benchmarks`` (``make bench``).

Subpackages (``benchmarks/README.md``, section Layout):

* :mod:`benchmarks.core`: the task and method interfaces, the explicit registry
  (:mod:`benchmarks.core.registry`), the runner (``run_one(task, optimizer, seed, budget,
  options=None, report=None) -> dict``), the keys and the JSON-lines result store, machine info;
* :mod:`benchmarks.families`: the task families (supervised full batch, minibatch, RL);
* :mod:`benchmarks.peers`: every optimizer row (tdopt, the gradient baselines, random search,
  OpenAI-ES) and one ask/tell adapter per peer library (``peers.catalog.make_peer``);
* :mod:`benchmarks.studies`: tune, speed, references, the baseline sweep, ablation, the radius
  sweep, screen, step_time;
* :mod:`benchmarks.report`: tables, plots, ``RESULTS.md``/``SUMMARY.md``, the comparison with the
  published tables and the README's generated sections.

``python -m benchmarks tune ...`` and ``python -m benchmarks speed ...`` dispatch to
``benchmarks.studies.tune.main(argv)`` and ``benchmarks.studies.speed.main(argv)``.
"""
