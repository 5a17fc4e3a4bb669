"""logstream: live build logs over Server-Sent Events."""

__version__ = "0.1.0"
