"""edgeport: take a trained model to the edge and prove it still works there."""

__version__ = "0.1.0"
