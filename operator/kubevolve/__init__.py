"""kubevolve: the ASI-Evolve loop (learn, design, experiment, analyze) for evolving programs."""

__version__ = "0.1.0"
