"""Train a detector (baseline). Copy and edit: change the defaults in yoloslim/commands/train.py,
or replace the argument list below, e.g. ["--model", "yolo11n.yaml", "--data", "my/data.yaml"]."""

from yoloslim.cli import script_main

if __name__ == "__main__":
    script_main("train")
