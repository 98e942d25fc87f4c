"""Sinks: the journal, out to the world, each by its own durable ``seq_id`` cursor.

Owns the ZeroMQ PUB publisher in fedmsg's format (``zeromq``), the AMQP sink in
fedora-messaging's (``amqp``), the fedmsg replay endpoint (``replay``) and the X.509
signatures of fedmsg envelopes (``signing``).

It may import the ground and ``bridge.journal``; a sink never knows a source: no intake,
no pipeline, no parser.
"""
