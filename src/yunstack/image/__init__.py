"""Glance v2: images, their data in a file store, and inspection of what is uploaded."""
