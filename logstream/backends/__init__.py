"""Where jobs live: the ``Backend`` protocol (``protocol``) and its implementations.

``protocol`` is pure (no trio); ``datadir`` is the data directory, the default;
``open_backend`` is the one place that picks an implementation from the settings. Nothing
else knows which one it has: see docs/architecture.md for how a new backend fits.
"""
