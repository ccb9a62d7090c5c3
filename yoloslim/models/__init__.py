"""Loading models of every supported family, and rewrites that make them prunable."""

from yoloslim.models.load import load_model, load_module

__all__ = ["load_model", "load_module"]
