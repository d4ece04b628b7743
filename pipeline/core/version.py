"""The package version, in one place (written into eval files, cascade dirs and ``slukd --version``)."""

__version__ = "0.1.0"
