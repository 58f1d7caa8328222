"""tickcast: a live data feed for a running market simulation."""

__all__ = ["__version__"]

__version__ = "0.1.0"
