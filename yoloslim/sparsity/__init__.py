"""Sparse training: penalties on BN scale factors (γ) that make channels prunable, plus γ statistics and plots."""

from yoloslim.sparsity.api import sparse_train

__all__ = ["sparse_train"]
