"""The ultralytics integration: trainer subclasses, validation, export, checkpoint I/O."""
