"""The measurements beside the main tables: tuning, speed, reference figures, the baseline sweep,
the ablation, the radius sweep, the screen and the step-time comparison (each with a ``main``)."""
