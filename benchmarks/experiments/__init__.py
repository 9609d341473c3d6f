"""One module per experiment; each defines ``EXPERIMENT = Experiment(...)``."""
