"""Errors that become HTTP responses.

Every problem a client can cause is raised as a ``RequestError`` with the status code and a message
that names the field and what is allowed; the app turns it into ``{"error": message}`` (the Open
Inference Protocol's error shape) and keeps serving.
"""

from __future__ import annotations


class RequestError(Exception):
    """A client error (or a server refusal such as 503) with its HTTP status code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> RequestError:
    return RequestError(400, message)


class ModelLoadError(Exception):
    """The model could not be fetched, verified or loaded; the message says exactly why."""
