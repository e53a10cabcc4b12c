"""The task families, one module each with a ``TASKS`` dict (listed in ``benchmarks.core.registry``)."""
