"""Microbenchmarks of the kernels and the packer, each appending CSV rows and writing a markdown table.

Run them as modules from the repository root, e.g. ``python -m benchmarks.packing --help``;
``benchmarks/_common.py`` holds what they share.
"""
