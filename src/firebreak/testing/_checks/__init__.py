"""The store contract, one module per area; `firebreak.testing.conformance` collects them."""
