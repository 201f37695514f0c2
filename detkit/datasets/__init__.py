"""Dataset conversion to TFRecords (TF Object Detection API keys), inspection and merging.

Readers (`readers/`) turn VOC, COCO or CSV annotations into `Example`s; `transform` validates
images, filters boxes and writes sharded TFRecords with `tfrecord`; `inspect` and `merge` work
on the output directory. Nothing here imports TensorFlow until records are written or read.
"""
