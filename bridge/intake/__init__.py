"""Intake: mail in, durable before the ``250``.

Owns the SMTP listener (``smtp``), the spool of accepted mail and the folders it keeps
aside (``spool``: inbox, failed, held, rejected, damaged) and the spool's on-disk record
format (``segment``).

It may import only the ground (``bridge.errors``, ``events``, ``config``, ``files``); the
pipeline reads the spool, never the other way round.
"""
