"""Stand-in for the terok_sandbox module: only ``supervise-child``."""
