"""`yoloslim train` as a script. Copy and edit: change defaults in yoloslim/commands/train.py, or call
yoloslim.engine.train.train(model, data, epochs=..., imgsz=...) from your own code."""

from yoloslim.cli import script_main

if __name__ == "__main__":
    script_main("train")
