"""Pretrained weights from other frameworks: torch state dicts into detkit's Keras models."""
