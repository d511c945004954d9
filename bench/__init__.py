"""Benchmarks of todo-api against a FastAPI + SQLModel baseline and a raw ASGI ceiling (see README.md)."""
