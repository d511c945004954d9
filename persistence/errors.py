"""What the database layer raises for a request it could not serve."""

from __future__ import annotations


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be reached or did not answer in time; the message names the cause."""


class OutcomeUnknown(DatabaseUnavailable):
    """The statement that commits had been sent when the database became unavailable: the work
    may or may not have been done."""


class FairShareExceeded(Exception):
    """The user already holds their share of this process's connections and none freed up in time."""


class BudgetExceeded(Exception):
    """The statement was cancelled by the budget of its own it was run with (`Database.run`'s
    `timeout_ms`): it costs more than that, and would again. Not a sign of an unavailable database."""
