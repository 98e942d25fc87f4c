"""Other buses as sources: fedmsg's relay inbound, where services that cannot be reached
publish actively (:mod:`bridge.buses.relay`). Their messages are journaled under their own
topics and ``msg_id``\\ s and published by every sink like the bridge's own events."""
