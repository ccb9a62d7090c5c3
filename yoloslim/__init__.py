"""yoloslim: make trained YOLO-family detectors smaller and faster.

Importing the package configures ultralytics for offline use, so it must be imported
before ultralytics (the CLI and the top-level scripts do this).
"""

from yoloslim.offline import configure as _configure_offline

_configure_offline()

__version__ = "0.1.0"
