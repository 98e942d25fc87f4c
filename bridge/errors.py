"""The bridge's exception hierarchy.

Every error the bridge raises on purpose derives from :class:`BridgeError`; the CLI turns
each into one readable line and the exit code it carries.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every deliberate bridge error."""

    exit_code = 1


class ConfigError(BridgeError):
    """The configuration file is missing, unreadable or invalid."""

    exit_code = 2


class UsageError(BridgeError):
    """A command was called with input it cannot use (bad JSON, unknown file, ...)."""

    exit_code = 2


class JournalError(BridgeError):
    """The journal could not be opened or written."""


class JournalUnavailable(JournalError):
    """The journal is locked, or its disk failed: the same write may succeed later."""


class JournalDamaged(JournalError):
    """The journal file is corrupt; ``bridge fsck`` checks it and salvages what it can."""

    exit_code = 3


class SpoolError(BridgeError):
    """The spool could not store or move a mail."""


class ParseError(BridgeError):
    """A parser met a mail it claims but cannot turn into a whole event.

    The pipeline sends such a mail to the dead-letter folder with this message as reason.
    """


class SkipMessage(BridgeError):
    """A parser recognised the mail and deliberately produces no event (an ack, say).

    The reason is counted and shown by ``bridge parse --explain``; the mail is kept as ignored.
    """


class ReplayError(BridgeError):
    """A replay query was malformed or could not be answered."""
