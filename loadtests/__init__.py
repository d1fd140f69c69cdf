"""Benchmarks and Locust scenarios; run against a live stack, never as tests."""
