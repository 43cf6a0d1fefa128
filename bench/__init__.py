"""Benchmarks (not timed tests): `make bench` runs every bench listed in bench/__main__.py."""
