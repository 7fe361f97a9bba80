"""Block storage (Cinder-like volumes): the backend seam and its backends."""
