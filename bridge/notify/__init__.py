"""Notifications: rules over the journal (``/raw``'s filters, trust verdicts, a maintainer's
packages), each delivering what it matches to a mailbox, a webhook or an IRC channel, from
a cursor of its own (``bridge notify``)."""
