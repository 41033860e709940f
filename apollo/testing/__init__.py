"""Helpers for tests and benchmarks: real server processes on free ports."""
