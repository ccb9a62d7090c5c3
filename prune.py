"""Prune a detector to a target speed-up. Copy and edit: change the defaults in yoloslim/commands/prune.py,
or run e.g. `python prune.py --weights best.pt --data my/data.yaml --method lamp --speed-up 2.0`."""

from yoloslim.cli import script_main

if __name__ == "__main__":
    script_main("prune")
