"""The worker process: its claim loop and one module per pipeline stage."""
