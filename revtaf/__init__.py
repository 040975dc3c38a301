"""REVTAF: Learnable Retrieval Enhanced Visual-Text Alignment and Fusion for radiology report generation."""

__version__ = "0.1.0"
