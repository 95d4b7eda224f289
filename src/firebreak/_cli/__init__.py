"""Helpers of the ``firebreak`` command line (private: the commands live in `firebreak.cli`).

Nothing here is public API; it only uses what the public API offers (`Engine`,
`open_store`, the `CheckpointStore` protocol, `firebreak.events`).
"""
