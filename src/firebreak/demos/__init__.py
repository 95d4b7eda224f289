"""Runnable demonstrations behind ``firebreak demo``."""
