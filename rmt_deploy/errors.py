"""Exceptions that the CLI turns into one-line messages and exit codes."""
from __future__ import annotations

__all__ = ["RmtDeployError", "UserInputError", "VerificationError", "BackendUnavailable"]


class RmtDeployError(Exception):
    """Base class: an expected failure with a message meant for the user."""

    exit_code = 1


class UserInputError(RmtDeployError):
    """Bad input (file, flag, folder): nothing was written; fix the input and retry."""

    exit_code = 2


class VerificationError(RmtDeployError):
    """An artifact was produced but its numbers disagree with the PyTorch reference."""

    exit_code = 1


class BackendUnavailable(RmtDeployError):
    """An optional backend package is missing or cannot run on this machine."""

    exit_code = 2
