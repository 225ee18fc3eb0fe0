"""risloss: Robustness-Guided Image Synthesis for data-free model compression."""

from risloss._eval import evaluate

__version__ = "0.1.0"

__all__ = ["__version__", "evaluate"]
