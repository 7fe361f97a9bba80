"""Nova v2.1 at /compute."""
