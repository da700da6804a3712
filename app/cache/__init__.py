"""Caching: schema cache hints, the entity cache, invalidation and the response cache."""
