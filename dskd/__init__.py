"""DSKD: Decoder-based Sense Knowledge Distillation."""

__version__ = "0.1.0"
