"""Finetune a pruned checkpoint. Copy and edit: change the defaults in yoloslim/commands/finetune.py,
or run e.g. `python finetune.py --weights runs/prune/pruned.pt --data my/data.yaml --epochs 50`."""

from yoloslim.cli import script_main

if __name__ == "__main__":
    script_main("finetune")
