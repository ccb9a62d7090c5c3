"""Datasets yoloslim can create offline, so demos, tests and benchmarks need no downloads."""

from yoloslim.data.synth import generate_dataset

__all__ = ["generate_dataset"]
