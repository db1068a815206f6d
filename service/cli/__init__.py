"""Console entry points: the only place that reads the process environment and chooses exit codes."""
