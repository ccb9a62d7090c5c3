"""The original anchor-based YOLOv5 (v6.0-v7.0 architecture) as a yoloslim model family.

``config.py`` says which specs belong to it (``yolov5{n,s,m,l,x}-anchor.yaml`` or a yaml with anchors),
``model.py`` builds the ultralytics ``DetectionModel`` it becomes, with the head in ``head.py`` and the
loss in ``loss.py``, and ``importer.py`` reads checkpoints written by the original repo's train.py without
running any code from them. Nothing here depends on the yolov5 repo. Submodules are imported where they
are needed, so that asking whether a spec belongs to the family does not load torch or ultralytics.
"""
