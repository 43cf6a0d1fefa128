"""Surfaces that speak other products' APIs (DeepStack / CodeProject.AI, …) as thin adapters.

Each is an HTTP adapter over Lookout's own services: images run as ordinary jobs through the
worker pool (listed in /v1/jobs, published on the firehose), faces live in the people gallery,
callers are Lookout API keys. Nothing here detects, matches or stores anything on its own.
"""
