"""Entry points: the ``fastmtl`` command line (``cli``) and one module per command
(``train``, ``eval``, ``predict``, ``experiments``, ``demo``)."""
