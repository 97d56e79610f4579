"""netreconciler: declarative container networking for Linux."""

__version__ = "0.1.0"
