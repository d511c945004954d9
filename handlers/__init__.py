"""Connexion handlers: one module per resource, plus the bearer function (auth)."""
