"""`yoloslim export` as a script. Copy and edit: change defaults in yoloslim/commands/export.py, or call
the Python function it wraps from your own code."""

from yoloslim.cli import script_main

if __name__ == "__main__":
    script_main("export")
