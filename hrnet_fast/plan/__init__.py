"""Compiled inference exchanges: an HRNet module's exchange as a program of
named instructions (program.py), compiled once per input signature
(compiler.py), guarded by what it rests on (guard.py), run by the Python
executor (executor.py) or as one C++ call (native.py), cached per module
(cache.py)."""
