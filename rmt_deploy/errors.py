"""Exceptions that the CLI turns into one-line messages and exit codes.

Three kinds of failure, kept apart:
- bad input from the user (``UserInputError``, exit 2): found before any work, nothing written;
- a failure about one artifact (its converter, its runtime, its own file): the export records it as
  that artifact's failure and keeps the others (``ConversionError``, ``VerificationError``; exit 1);
- our own bugs: Python's programming errors (``PROGRAMMING_ERRORS``) are never rephrased as bad
  input; the CLI reports them as internal errors (exit 1) with the traceback under RMT_DEPLOY_DEBUG.
"""
from __future__ import annotations

__all__ = ["RmtDeployError", "UserInputError", "VerificationError", "ConversionError", "BackendUnavailable",
           "PROGRAMMING_ERRORS"]

# Raised by mistakes in code (ours, or ours calling a library wrongly), never by a damaged file:
# a handler that turns a runtime's refusal into "bad input" lets these through.
PROGRAMMING_ERRORS = (AttributeError, KeyError, IndexError, TypeError, NameError, AssertionError)


class RmtDeployError(Exception):
    """Base class: an expected failure with a message meant for the user."""

    exit_code = 1


class UserInputError(RmtDeployError):
    """Bad input (file, flag, folder): nothing was written; fix the input and retry."""

    exit_code = 2


class VerificationError(RmtDeployError):
    """An artifact was produced but its numbers disagree with the PyTorch reference."""

    exit_code = 1


class ConversionError(RmtDeployError):
    """A converter or runtime refused a model that rmt-deploy itself wrote (a parser, a builder)."""

    exit_code = 1


class BackendUnavailable(RmtDeployError):
    """An optional backend package is missing or cannot run on this machine."""

    exit_code = 2
