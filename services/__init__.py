"""Reference implementations of the six upstream domain services (see the API contract)."""
