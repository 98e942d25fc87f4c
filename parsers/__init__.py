"""The bridge's built-in parser plugins (registered through the ``bridge.parsers`` group)."""
