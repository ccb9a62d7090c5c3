"""The original YOLOv7 (yolov7-tiny, yolov7, yolov7x) as a yoloslim model family."""
