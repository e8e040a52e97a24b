"""regene-search: distributed multi-objective hyperparameter search for ReGene."""

__version__ = "0.1.0"
