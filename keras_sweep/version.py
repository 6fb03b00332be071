"""The version of sweep (the journal keys and the SSH hosts check it)."""

__version__ = "0.1.0"
