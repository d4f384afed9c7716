"""Benchmarks, memory profiles and the performance report. Not imported by ingestd itself."""
