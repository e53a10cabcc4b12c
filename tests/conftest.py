"""Shared test settings: the Hypothesis profile.

With CI set in the environment the "ci" profile is loaded: derandomized (the same examples on
every run, so a CI failure reproduces locally with CI=1), no deadline (shared runners are slow)
and the reproduction blob printed with a failure. HYPOTHESIS_PROFILE=NAME picks a profile explicitly.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default"))
