"""The optimizer rows, one module each with a ``METHODS`` dict (listed in ``benchmarks.core.registry``):
tdopt, the gradient baselines, random search, OpenAI-ES, and one ask/tell adapter per peer library
(``catalog.make_peer`` builds any of them as a plain ask/tell object on a flat vector)."""
