"""Configuration: one typed object built from embedded defaults and an optional TOML file.

Every key has a default; a key the bridge does not know is an error that lists the valid
ones. Nothing here runs at import time: call :func:`load_config`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any

from bridge.errors import ConfigError
from bridge.events import Naming

CONFIG_ENV = "BRIDGE_CONFIG"


def default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "debian-bus-bridge")


def default_username() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "bridge"


@dataclass(frozen=True)
class SmtpConfig:
    listen: str = "127.0.0.1:8025"
    recipients: list[str] = field(default_factory=lambda: ["bridge@localhost"])
    max_message_size: int = 32 * 1024 * 1024
    max_line_length: int = 65536
    max_recipients: int = 100
    max_commands: int = 10_000
    command_timeout: float = 300.0
    data_timeout: float = 600.0
    max_connections: int = 64
    # Behind an MTA every delivery comes from one peer: postfix opens up to 20 at a time.
    max_connections_per_peer: int = 20
    # Who may connect at all (CIDRs): the bridge sits behind the host's own MTA.
    allowed_peers: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    min_free_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class SigningConfig:
    # fedmsg's X.509 scheme: an RSA key (PEM) and its certificate from your fedmsg CA.
    key: str = ""
    certificate: str = ""


@dataclass(frozen=True)
class BusConfig:
    publish: str = "tcp://127.0.0.1:9940"
    replay: str = "tcp://127.0.0.1:9941"
    replay_max_messages: int = 1000
    replay_max_request_bytes: int = 1 << 20
    poll_interval: float = 0.02
    # Like fedmsg's post_init_sleep: let subscribers (re)connect before the backlog goes out.
    startup_delay: float = 0.5
    send_hwm: int = 100_000
    signing: SigningConfig = field(default_factory=SigningConfig)


@dataclass(frozen=True)
class InboxConfig:
    # Forward each mail no parser wanted (list confirmations, notices) to this address.
    forward_to: str = ""
    smtp: str = "127.0.0.1:25"  # the host's MTA, which delivers forwarded mail
    sender: str = "bridge@localhost"  # envelope sender and Resent-From of forwarded mail


@dataclass(frozen=True)
class JournalConfig:
    # Empty: SQLite in the state directory. "postgresql://user@host/db": a journal shared
    # by bridges on several hosts.
    url: str = ""


@dataclass(frozen=True)
class AmqpConfig:
    # Empty: no AMQP sink. e.g. "amqp://guest:guest@127.0.0.1:5672/%2F" ("amqps://" for TLS)
    url: str = ""
    exchange: str = "amq.topic"
    ca_certificate: str = ""  # TLS: the CA to check the broker against (default: system's)
    certificate: str = ""  # TLS client certificate and its key, when the broker asks
    key: str = ""


@dataclass(frozen=True)
class SpoolConfig:
    retention_days: float = 7.0
    group_commit_window: float = 0.0


@dataclass(frozen=True)
class MboxConfig:
    # the SMTP limit: an archive's mail is no bigger than what the list server delivered
    max_message_size: int = 32 * 1024 * 1024


@dataclass(frozen=True)
class WebToken:
    # "sha256:<hex>" of the token (bridge web token add makes both); never the token itself
    hash: str = ""
    # the event topic prefixes the token may publish under, e.g. ["mentors."]
    topics: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class WebConfig:
    listen: str = "127.0.0.1:8080"
    max_body_bytes: int = 64 * 1024  # POST /v1/publish: a larger body is refused (413)
    rate_limit: float = 60.0  # publishes per minute per token, on average
    rate_burst: int = 20  # publishes a token may make at once before the average applies
    page_events: int = 50  # events the page shows before any arrive live
    # Live streams (/v1/stream) open at once, in all and from one client address: one more
    # is answered 503 with the limit.
    max_streams: int = 1024
    max_streams_per_client: int = 64
    # A request's head and body must arrive within this many seconds, or the connection
    # is cut (a client that sends a byte a minute holds nothing for long).
    request_timeout: float = 30.0
    # [web.tokens.NAME] tables, written by 'bridge web token add NAME --topics PREFIX'
    tokens: dict[str, WebToken] = field(default_factory=dict, metadata={"table_of": WebToken})


@dataclass(frozen=True)
class DiscoveryConfig:
    # SRV lookups (bridge tail --srv, upstreams' srv): resolvers to ask (IP addresses;
    # empty: the system's), their port, how long one lookup may take, and how long an
    # answer is kept at most (never longer than its TTL)
    dns_servers: list[str] = field(default_factory=list)
    dns_port: int = 53
    timeout: float = 5.0
    cache_seconds: float = 60.0


@dataclass(frozen=True)
class FedmsgTrust:
    """fedmsg's trust model, with its key names (``[relay]`` and each ``[upstream.NAME]``):
    a message must be signed by a certificate the CA issued (and the CRL does not revoke)
    that routing_policy lets send its topic."""

    validate_signatures: bool = True
    ca_cert_location: str = ""  # PEM file
    crl_location: str = ""  # PEM file; empty: none
    routing_policy: dict[str, list[str]] = field(default_factory=dict)
    routing_nitpicky: bool = False


@dataclass(frozen=True)
class RelayConfig(FedmsgTrust):
    # fedmsg's relay_inbound: a SUB socket active publishers connect their PUB socket to
    # (fedmsg-logger, fedmsg.publish(active=True)); empty: off
    listen: str = ""
    name: str = "relay"  # origin.relay of what it journals
    topic_prefixes: list[str] = field(default_factory=list)  # full topics accepted; []: any
    max_message_bytes: int = 1 << 20
    rate_limit: float = 200.0  # messages a second from one sender, on average
    rate_burst: int = 2000


@dataclass(frozen=True)
class UpstreamConfig(FedmsgTrust):
    """One ``[upstream.NAME]``: another bus whose messages this bridge journals too."""

    # signatures are not checked unless asked for: another bridge's bus, by default
    validate_signatures: bool = False

    # a fedmsg bus: its PUB endpoints, or a domain whose _fedmsg._tcp SRV records name them
    endpoints: list[str] = field(default_factory=list)
    srv: str = ""
    # its replay endpoint, to fetch what a gap in its seq_id lost ("" with srv: the
    # domain's _fedmsg-replay._tcp record, if any)
    replay: str = ""
    topics: list[str] = field(default_factory=list)  # full topic prefixes; []: everything
    # or an AMQP broker (fedora-messaging's format): a durable queue bound to bindings
    amqp_url: str = ""
    amqp_queue: str = ""
    amqp_exchange: str = "amq.topic"
    amqp_bindings: list[str] = field(default_factory=lambda: ["#"])


@dataclass(frozen=True)
class NotifyRule:
    """One ``[notify.rules.NAME]``: what to deliver (``/raw``'s filters, the trust verdicts,
    a maintainer's packages) and where, how often and how much."""

    # mailto:ADDRESS, https://… (a webhook) or irc://HOST:PORT/#channel
    deliver: str = ""
    # /raw's filters: each any of its values; the not_ forms leave events out
    topic: list[str] = field(default_factory=list)
    category: list[str] = field(default_factory=list)
    package: list[str] = field(default_factory=list)
    bug: list[str] = field(default_factory=list)
    user: list[str] = field(default_factory=list)
    agent: list[str] = field(default_factory=list)
    contains: list[str] = field(default_factory=list)
    not_topic: list[str] = field(default_factory=list)
    not_category: list[str] = field(default_factory=list)
    not_package: list[str] = field(default_factory=list)
    not_user: list[str] = field(default_factory=list)
    not_agent: list[str] = field(default_factory=list)
    # the trust verdicts to deliver (origin.auth.verdict): ["pass"] never notifies a forgery
    auth: list[str] = field(default_factory=list)
    # the packages whose uploads name this address as Maintainer, learned from the journal
    maintainer: str = ""
    digest: str = "none"  # none, hourly or daily
    rate_limit: int = 0  # deliveries per rate_period; 0: no limit
    rate_period: float = 60.0
    # over the limit: "digest" sends the held events in one notice when the period ends,
    # "count" only says how many were held
    over_limit: str = "digest"
    secret: str = ""  # webhooks: "whsec_<base64 key>" (Standard Webhooks)
    # where a new rule starts: "end" (what is journaled from now on) or "beginning"
    start: str = "end"


@dataclass(frozen=True)
class NotifyConfig:
    smtp: str = "127.0.0.1:25"  # the host's MTA, which delivers notification mail
    sender: str = "bridge@localhost"  # From: and envelope sender of notification mail
    # The link each notification gives to its rule's settings and preview (the web face).
    web_url: str = "http://127.0.0.1:8080"
    irc_nick: str = "debian-bus"
    irc_burst: int = 4  # lines an IRC connection may send at once
    irc_interval: float = 2.0  # then one line per this many seconds (servers cut floods)
    poll_interval: float = 1.0  # how often rules look at the journal without a wake-up
    # a failing destination is retried with growing pauses, up to retry_max apart, and
    # disabled (counted, shown) once it has failed for disable_after seconds
    retry_max: float = 300.0
    disable_after: float = 86_400.0
    timeout: float = 10.0  # seconds a delivery may take before it counts as failed
    digest_items: int = 100  # events a digest lists (the rest are counted)
    rules: dict[str, NotifyRule] = field(default_factory=dict, metadata={"table_of": NotifyRule})


DEBIAN_KEYRINGS = (
    "/usr/share/keyrings/debian-keyring.gpg",
    "/usr/share/keyrings/debian-maintainers.gpg",
    "/usr/share/keyrings/debian-nonupload.gpg",
)
POLICIES = ("mark", "hold", "drop")
OPENPGP_ENGINES = ("builtin", "gpgv")  # how .changes signatures are checked


def installed_debian_keyrings() -> list[str]:
    """Debian's developer keyrings (package debian-keyring), those that are installed."""
    return [k for k in DEBIAN_KEYRINGS if os.path.exists(k)]


@dataclass(frozen=True)
class TrustConfig:
    verify: bool = True
    # A file of DKIM key TXT records: "<selector>._domainkey.<domain> <record>" a line.
    dkim_keys: str = ""
    dns: bool = True
    dns_timeout: float = 5.0
    # All the key lookups of one mail share this many seconds: past it, temperror at once.
    dns_budget: float = 8.0
    # Resolvers to ask (IP addresses; empty: the system's), and their port.
    dns_servers: list[str] = field(default_factory=list)
    dns_port: int = 53
    # Authentication-Results from these authserv-ids (your own MTA) count; others never do.
    authserv_ids: list[str] = field(default_factory=list)
    required_headers: list[str] = field(
        default_factory=lambda: ["From", "Subject", "Message-ID", "Date"]
    )
    keyrings: list[str] = field(default_factory=installed_debian_keyrings)
    gpgv: str = "gpgv"
    # "builtin": gpgv once per signing key, then each signature checked in-process with
    # gpgv's verdict; "gpgv": gpgv for every signature (the reference)
    openpgp: str = "builtin"
    # Which DKIM domains may vouch for each parser's mail.
    domains: dict[str, list[str]] = field(
        default_factory=lambda: {"debbugs": ["bugs.debian.org"], "dak": ["ftp-master.debian.org"]}
    )
    # What happens to an event that is not "pass", per topic family: mark, hold or drop.
    policy: dict[str, str] = field(default_factory=dict)

    def policy_for(self, topic: str) -> str:
        return self.policy.get(topic.split(".", 1)[0], "mark")


@dataclass(frozen=True)
class Config:
    state_dir: str = field(default_factory=default_state_dir)
    topic_prefix: str = "org.debian"
    environment: str = "dev"
    username: str = field(default_factory=default_username)
    log_level: str = "INFO"
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    bus: BusConfig = field(default_factory=BusConfig)
    amqp: AmqpConfig = field(default_factory=AmqpConfig)
    journal: JournalConfig = field(default_factory=JournalConfig)
    inbox: InboxConfig = field(default_factory=InboxConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    mbox: MboxConfig = field(default_factory=MboxConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)
    web: WebConfig = field(default_factory=WebConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    # [upstream.NAME] tables: other buses journaled here too
    upstream: dict[str, UpstreamConfig] = field(
        default_factory=dict, metadata={"table_of": UpstreamConfig}
    )

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir).expanduser()

    def discovery_client(self) -> Any:
        """The SRV lookups ``[discovery]`` sets up."""
        from bridge.discovery import Discovery

        d = self.discovery
        return Discovery(list(d.dns_servers), d.dns_port, d.timeout, d.cache_seconds)

    @property
    def naming(self) -> Naming:
        """How this bridge names its bus topics and itself."""
        return Naming(self.topic_prefix, self.environment, self.username)

    def replace(self, **changes: Any) -> Config:
        """Return a copy with top-level keys changed (CLI options override the file)."""
        return dataclasses.replace(self, **changes)

    def with_section(self, section: str, **changes: Any) -> Config:
        return dataclasses.replace(
            self, **{section: dataclasses.replace(getattr(self, section), **changes)}
        )


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read the TOML file at *path* (or ``$BRIDGE_CONFIG``) over the embedded defaults."""
    path = path or os.environ.get(CONFIG_ENV) or None
    if path is None:
        return Config()
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {path}") from e
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {path} is not UTF-8 (TOML is): {e.reason} at byte {e.start}"
        ) from e
    config = _build(Config, data, where="")
    networks("smtp.allowed_peers", config.smtp.allowed_peers)  # checked when read
    if config.journal.url and not config.journal.url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            f"config key 'journal.url' must start postgresql://, not {config.journal.url!r}"
        )
    if config.amqp.url and not config.amqp.url.startswith(("amqp://", "amqps://")):
        raise ConfigError(
            f"config key 'amqp.url' must start amqp:// or amqps://, not {config.amqp.url!r}"
        )
    if config.trust.openpgp not in OPENPGP_ENGINES:
        raise ConfigError(
            f"config key 'trust.openpgp' must be one of {', '.join(OPENPGP_ENGINES)},"
            f" not {config.trust.openpgp!r}"
        )
    for family, policy in config.trust.policy.items():
        if policy not in POLICIES:
            raise ConfigError(
                f"config key 'trust.policy.{family}' must be one of {', '.join(POLICIES)},"
                f" not {policy!r}"
            )
    try:
        parse_hostport(config.web.listen)
    except ConfigError as e:
        raise ConfigError(f"config key 'web.listen': {e}") from None
    for name, token in config.web.tokens.items():
        if not token.hash.startswith("sha256:") or len(token.hash) != 71:
            raise ConfigError(
                f"config key 'web.tokens.{name}.hash' must be sha256:<64 hex digits>"
                " (bridge web token add writes it)"
            )
        if not token.topics:
            raise ConfigError(f"config key 'web.tokens.{name}.topics' must name a topic prefix")
    _check_notify(config.notify)
    relay = config.relay
    if relay.listen and relay.validate_signatures and not relay.ca_cert_location:
        raise ConfigError(
            "config key 'relay.ca_cert_location' must name the fedmsg CA's certificate to"
            " validate signatures (or set relay.validate_signatures = false)"
        )
    for name, upstream in config.upstream.items():
        key = f"upstream.{name}"
        ways = [bool(upstream.endpoints), bool(upstream.srv), bool(upstream.amqp_url)]
        if sum(ways) != 1:
            raise ConfigError(
                f"config key '{key}' needs one of endpoints, srv or amqp_url (it has {sum(ways)})"
            )
        if upstream.amqp_url and not upstream.amqp_queue:
            raise ConfigError(f"config key '{key}.amqp_queue' must name the queue to read")
        if upstream.validate_signatures and not upstream.ca_cert_location:
            raise ConfigError(
                f"config key '{key}.ca_cert_location' must name the fedmsg CA's certificate"
                " to validate signatures"
            )
    return config


DIGESTS = ("none", "hourly", "daily")
VERDICTS = ("pass", "fail", "none")
OVER_LIMIT = ("digest", "count")
RULE_STARTS = ("end", "beginning")


def _check_notify(notify: NotifyConfig) -> None:
    """What each rule's keys must be beyond their types (its filters are checked as
    ``/raw`` checks them, by :mod:`bridge.notify.rules`)."""
    try:
        parse_hostport(notify.smtp)
    except ConfigError as e:
        raise ConfigError(f"config key 'notify.smtp': {e}") from None
    for name, rule in notify.rules.items():
        key = f"notify.rules.{name}"
        if not rule.deliver.startswith(("mailto:", "https://", "http://", "irc://", "ircs://")):
            raise ConfigError(
                f"config key '{key}.deliver' must be mailto:ADDRESS, https://URL (a webhook)"
                f" or irc://HOST:PORT/#channel, not {rule.deliver!r}"
            )
        choices = (
            ("digest", rule.digest, DIGESTS),
            ("over_limit", rule.over_limit, OVER_LIMIT),
            ("start", rule.start, RULE_STARTS),
        )
        for field_name, value, allowed in choices:
            if value not in allowed:
                raise ConfigError(
                    f"config key '{key}.{field_name}' must be one of {', '.join(allowed)},"
                    f" not {value!r}"
                )
        for verdict in rule.auth:
            if verdict not in VERDICTS:
                raise ConfigError(
                    f"config key '{key}.auth' lists {verdict!r}; verdicts are {', '.join(VERDICTS)}"
                )
        if rule.deliver.startswith(("https://", "http://")) and not _webhook_secret(rule.secret):
            raise ConfigError(
                f"config key '{key}.secret' must be whsec_<base64 key> for a webhook"
                " (Standard Webhooks); e.g. whsec_ and the base64 of 32 random bytes"
            )


def _webhook_secret(secret: str) -> bool:
    import base64
    import binascii

    if not secret.startswith("whsec_"):
        return False
    try:
        return len(base64.b64decode(secret[6:], validate=True)) >= 16
    except binascii.Error:
        return False


def networks(key: str, values: list[str]) -> list[IPv4Network | IPv6Network]:
    """The networks a config key lists (host bits tolerated), or ConfigError naming the key."""
    found = []
    for value in values:
        try:
            found.append(ip_network(value, strict=False))
        except ValueError as e:
            raise ConfigError(f"config key {key!r}: {value!r} is not a network ({e})") from e
    return found


# The range each number may take, by key: a value outside is a config error naming it.
DAY = 86_400.0
RANGES: dict[str, tuple[float, float]] = {
    "smtp.max_message_size": (1024, 2**40),
    "smtp.max_line_length": (1000, 2**24),  # RFC 5321's least is 1000
    "smtp.max_recipients": (1, 100_000),
    "smtp.max_commands": (1, 10**9),
    "smtp.command_timeout": (0.1, DAY),
    "smtp.data_timeout": (0.1, DAY),
    "smtp.max_connections": (1, 100_000),
    "smtp.max_connections_per_peer": (1, 100_000),
    "smtp.min_free_bytes": (0, 2**53),
    "bus.replay_max_messages": (1, 10**7),
    "bus.replay_max_request_bytes": (1024, 2**31 - 1),
    "bus.poll_interval": (0.001, 60.0),
    "bus.startup_delay": (0.0, 600.0),
    "bus.send_hwm": (0, 2**31 - 1),  # ZeroMQ's is a C int; 0: no limit
    "spool.retention_days": (0.0, 36_500.0),
    "spool.group_commit_window": (0.0, 10.0),
    "mbox.max_message_size": (1024, 2**40),
    "web.max_body_bytes": (1024, 2**31 - 1),
    "web.rate_limit": (0.0, 10**6),
    "web.rate_burst": (1, 10**6),
    "web.page_events": (1, 1000),
    "web.max_streams": (1, 100_000),
    "web.max_streams_per_client": (1, 100_000),
    "web.request_timeout": (0.1, DAY),
    "trust.dns_timeout": (0.01, 600.0),
    "trust.dns_budget": (0.01, 3600.0),
    "trust.dns_port": (1, 65_535),
    "discovery.dns_port": (1, 65_535),
    "discovery.timeout": (0.01, 600.0),
    "discovery.cache_seconds": (0.0, DAY),
    "relay.max_message_bytes": (1024, 64 << 20),
    "relay.rate_limit": (0.01, 10**6),
    "relay.rate_burst": (1, 10**7),
    "notify.irc_burst": (1, 1000),
    "notify.irc_interval": (0.0, 600.0),
    "notify.poll_interval": (0.01, 3600.0),
    "notify.retry_max": (0.1, DAY),
    "notify.disable_after": (1.0, 365 * DAY),
    "notify.timeout": (0.1, 600.0),
    "notify.digest_items": (1, 10_000),
    "notify.rules.*.rate_limit": (0, 10**6),
    "notify.rules.*.rate_period": (1.0, 30 * DAY),
}
ANY_NUMBER = (0, 2**31 - 1)  # a number key not listed above


def _in_range(key: str, value: float) -> None:
    if key.startswith("notify.rules."):  # one range for the key of every rule
        key_in_table = "notify.rules.*." + key.rsplit(".", 1)[-1]
        low, high = RANGES.get(key_in_table, ANY_NUMBER)
    else:
        low, high = RANGES.get(key, ANY_NUMBER)
    if not (math.isfinite(value) and low <= value <= high):
        raise ConfigError(f"config key {key!r} must be from {low:g} to {high:g}, not {value!r}")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        valid = ", ".join(_qualified(where, n) for n in fields)
        raise ConfigError(
            f"unknown config key {_qualified(where, unknown[0])!r}; valid keys: {valid}"
        )
    defaults = cls()
    values: dict[str, Any] = {}
    for name, value in data.items():
        default = getattr(defaults, name)
        key = _qualified(where, name)
        item_type = fields[name].metadata.get("table_of")
        if dataclasses.is_dataclass(default) or item_type:
            if not isinstance(value, dict):
                raise ConfigError(f"config key {key!r} must be a table")
            if item_type:  # a table of named tables, each of one type
                values[name] = {
                    n: _table_item(item_type, v, f"{key}.{n}") for n, v in value.items()
                }
            else:
                values[name] = _build(type(default), value, where=key)
        else:
            values[name] = _coerce(key, value, default)
    return cls(**values)


def _table_item(cls: type, value: Any, key: str) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(f"config key {key!r} must be a table")
    return _build(cls, value, where=key)


def _coerce(key: str, value: Any, default: Any) -> Any:
    if isinstance(default, dict):
        return _table(key, value, default)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, list):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(f"config key {key!r} must be {_kind(default)}, not {value!r}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        _in_range(key, value)
    return value


def _table(key: str, value: Any, default: dict[str, Any]) -> dict[str, Any]:
    """A table of free names (parser names, topic families) over the default's entries;
    each value a list of strings (when the defaults hold lists) or a string."""
    if not isinstance(value, dict):
        raise ConfigError(f"config key {key!r} must be a table")
    lists = any(isinstance(v, list) for v in default.values()) or key.endswith(
        ("domains", "routing_policy")
    )
    merged = dict(default)
    for name, item in value.items():
        ok = (
            isinstance(item, list) and all(isinstance(v, str) for v in item)
            if lists
            else isinstance(item, str)
        )
        if not ok:
            kind = "a list of strings" if lists else "a string"
            raise ConfigError(f"config key '{key}.{name}' must be {kind}, not {item!r}")
        merged[name] = item
    return merged


def _kind(default: Any) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, list):
        return "a list of strings"
    return "a string"


def _qualified(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def parse_hostport(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:25`` for IPv6) into its parts."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)
