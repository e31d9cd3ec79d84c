"""Compiled copies of fastreid's Cython evaluators (built by setup.py)."""
