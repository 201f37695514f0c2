"""Faster R-CNN pieces, one concept per module (see docs/architecture.md)."""
