"""Benchmarks (not tests): each module prints the project beside a naive baseline from the same run.

Run one with ``python -m bench NAME [options]`` (``python -m bench`` lists them).
"""
