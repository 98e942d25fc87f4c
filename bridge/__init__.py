"""debian-bus-bridge: Debian's bug-tracker and archive mail as a fedmsg-compatible event bus."""

__version__ = "0.1.0"
