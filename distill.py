"""Distil a teacher into a student. Copy and edit: change the defaults in yoloslim/commands/distill.py,
or pass e.g. --model pruned.pt --teacher best.pt --data my/data.yaml --logit l2 --feature cwd."""

from yoloslim.cli import script_main

if __name__ == "__main__":
    script_main("distill")
