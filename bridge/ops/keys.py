"""The key files a configuration names, read before a command does anything: a bad file is
one line and exit status 2 for every command, as any other bad configuration value is.

Here, above the components that use them, so the configuration itself imports none.
"""

from __future__ import annotations

from pathlib import Path

from bridge.config import Config


def check_key_files(config: Config) -> None:
    """Read the envelope-signing key and certificate and the DKIM key file *config* names;
    ``ConfigError`` says what is wrong with the first that does not read."""
    signing = config.bus.signing
    if signing.key or signing.certificate:
        from bridge.sinks.signing import signer_of

        signer_of(signing.key, signing.certificate)
    if config.trust.dkim_keys:
        from bridge.trust.keys import read_key_file

        read_key_file(Path(config.trust.dkim_keys).expanduser())
