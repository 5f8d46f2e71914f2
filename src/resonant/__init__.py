"""Resonant anomaly detection at colliders: library behind the Snakemake workflow."""

__version__ = "0.1.0"
