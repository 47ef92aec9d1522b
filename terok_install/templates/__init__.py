"""Templates rendered by the installer."""
