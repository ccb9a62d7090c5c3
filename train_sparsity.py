"""Sparse-train a detector so its BN channels become prunable. Copy and edit: change the defaults
in yoloslim/commands/sparse.py, or run e.g. `python train_sparsity.py --weights runs/train/train/weights/best.pt
--data my/data.yaml --sr 1e-2 --method slim --epochs 100`."""

from yoloslim.cli import script_main

if __name__ == "__main__":
    script_main("sparse")
