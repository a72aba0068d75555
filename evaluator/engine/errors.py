"""Exceptions the engine raises, split by who is to blame.

A ContractError means the upload itself is wrong (status `rejected`); its message is
shown to the user as is, so it must name what is wrong (which op, which shape, which
limit) and never contain a traceback. Anything else is an internal failure (`failed`).
"""


class ContractError(Exception):
    """The uploaded network or archive breaks the network contract."""


class ArchiveError(ContractError):
    """The archive is malformed, hostile or holds no SavedModel."""


class OpScanError(ContractError):
    """The SavedModel graph uses ops outside the allowlist."""

    def __init__(self, message: str, ops: frozenset[str] = frozenset()) -> None:
        super().__init__(message)
        self.ops = ops


class SandboxError(Exception):
    """The sandboxed child crashed, hung or exceeded a resource limit."""
