"""The stdlib-only scripts install copies into <state_root>/hooks."""
