"""Shipped launch configurations, keyed kernel | dtype | channels | size
bucket | input pattern (see tuning.py). Written by benchmarks/tune_triton.py;
do not edit by hand.
"""
SOURCE = "empty"
TABLE = {}
