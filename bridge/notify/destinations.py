"""Where a rule delivers: a mailbox through the host's MTA, a webhook (Standard Webhooks),
or an IRC channel. Each :meth:`Destination.deliver` returns once the other side has taken
the notice, and raises when it has not (the rule then retries it)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import smtplib
import threading
import time
from abc import ABC, abstractmethod
from urllib.parse import unquote, urlsplit

from bridge.config import NotifyConfig, NotifyRule, parse_hostport
from bridge.errors import ConfigError
from bridge.notify.irc import IrcServer
from bridge.notify.render import Notice, irc_lines, mail_of, webhook_body

USER_AGENT = "debian-bus-bridge-notify"


class DeliveryError(OSError):
    """The destination did not take the notice."""


class Destination(ABC):
    label: str

    @abstractmethod
    def deliver(self, notice: Notice) -> None: ...

    def idle(self) -> None:  # noqa: B027 - a hook: most destinations hold no connection
        """Nothing to deliver for now (a connection may answer its server)."""

    def close(self) -> None:  # noqa: B027 - a hook
        """At the end."""


class MailDestination(Destination):
    """One mail a notice, handed to the host's MTA by SMTP."""

    def __init__(self, recipient: str, settings: NotifyConfig, rule_url: str):
        self.recipient = recipient
        self.settings = settings
        self.rule_url = rule_url
        self.host, self.port = parse_hostport(settings.smtp)
        self.domain = settings.sender.rpartition("@")[2] or "localhost"
        self.label = f"mailto:{recipient}"

    def deliver(self, notice: Notice) -> None:
        message = mail_of(
            notice,
            sender=self.settings.sender,
            recipient=self.recipient,
            domain=self.domain,
            rule_url=self.rule_url,
        )
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.settings.timeout) as smtp:
                refused = smtp.send_message(
                    message, from_addr=self.settings.sender, to_addrs=[self.recipient]
                )
        except smtplib.SMTPException as e:
            raise DeliveryError(f"{self.settings.smtp} refused the mail: {e}") from e
        if refused:
            raise DeliveryError(f"{self.settings.smtp} refused {self.recipient}: {refused}")


def sign_webhook(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks' signature header value: ``v1,`` and the base64 HMAC-SHA256 of
    ``id.timestamp.body`` under the secret's key (the base64 after ``whsec_``)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


class WebhookDestination(Destination):
    """A POST a notice, signed as Standard Webhooks says; any answer but 2xx is a failure
    (redirects included: a signed body is not sent on elsewhere)."""

    connection: http.client.HTTPConnection | None

    def __init__(self, url: str, secret: str, timeout: float):
        parts = urlsplit(url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.tls else 80)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.secret = secret
        self.timeout = timeout
        self.label = f"{parts.scheme}://{parts.netloc}{parts.path}"
        # kept open between notices (HTTP/1.1 keep-alive): a catch-up is not a TCP
        # handshake an event
        self.connection: http.client.HTTPConnection | None = None

    def deliver(self, notice: Notice) -> None:
        body = webhook_body(notice)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": notice.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign_webhook(self.secret, notice.id, timestamp, body),
        }
        try:
            answer = self._post(body, headers)
        except (http.client.HTTPException, OSError) as e:
            self.close()
            raise DeliveryError(f"{self.label}: {type(e).__name__}: {e}") from e
        if not 200 <= answer.status < 300:
            self.close()
            raise DeliveryError(f"{self.label} answered {answer.status} {answer.reason}")

    def _post(self, body: bytes, headers: dict[str, str]) -> http.client.HTTPResponse:
        """POST on the kept connection; once more on a new one if the kept one was closed
        by the server while idle (the notice was not taken: sending it again is right)."""
        kept = self.connection is not None
        try:
            return self._post_once(body, headers)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            self.close()
            if not kept:
                raise
            return self._post_once(body, headers)

    def _post_once(self, body: bytes, headers: dict[str, str]) -> http.client.HTTPResponse:
        if self.connection is None:
            kind = http.client.HTTPSConnection if self.tls else http.client.HTTPConnection
            self.connection = kind(self.host, self.port, timeout=self.timeout)
        self.connection.request("POST", self.path, body=body, headers=headers)
        answer = self.connection.getresponse()
        answer.read(1 << 16)
        if answer.will_close:
            self.close()
        return answer

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


class IrcDestination(Destination):
    """Lines in one channel, on a connection shared with the rules on that server."""

    def __init__(self, server: IrcServer, channel: str):
        self.server = server
        self.channel = channel
        self.label = f"{server.label}/{channel}"

    def deliver(self, notice: Notice) -> None:
        self.server.say(self.channel, irc_lines(notice))

    def idle(self) -> None:
        self.server.keepalive()

    def close(self) -> None:
        self.server.close()


class IrcServers:
    """One connection a server, whatever number of rules speak there."""

    def __init__(self, settings: NotifyConfig):
        self.settings = settings
        self.servers: dict[tuple[str, int, bool], IrcServer] = {}
        self.lock = threading.Lock()

    def get(self, host: str, port: int, tls: bool) -> IrcServer:
        with self.lock:
            key = (host, port, tls)
            if key not in self.servers:
                self.servers[key] = IrcServer(
                    host,
                    port,
                    self.settings.irc_nick,
                    tls=tls,
                    burst=self.settings.irc_burst,
                    interval=self.settings.irc_interval,
                    timeout=self.settings.timeout,
                )
            return self.servers[key]


def open_destination(
    name: str, rule: NotifyRule, settings: NotifyConfig, irc: IrcServers
) -> Destination:
    """The destination a rule's ``deliver`` names."""
    deliver = rule.deliver
    if deliver.startswith("mailto:"):
        address = unquote(deliver[len("mailto:") :].split("?", 1)[0])
        if "@" not in address:
            raise ConfigError(
                f"config key 'notify.rules.{name}.deliver': no address in {deliver!r}"
            )
        return MailDestination(address, settings, f"{settings.web_url}/notify/{name}")
    if deliver.startswith(("https://", "http://")):
        return WebhookDestination(deliver, rule.secret, settings.timeout)
    parts = urlsplit(deliver)
    channel = unquote(parts.fragment and f"#{parts.fragment}" or parts.path.lstrip("/"))
    if not parts.hostname or not channel.startswith(("#", "&")):
        raise ConfigError(
            f"config key 'notify.rules.{name}.deliver' must be irc://HOST:PORT/#channel,"
            f" not {deliver!r}"
        )
    tls = parts.scheme == "ircs"
    server = irc.get(parts.hostname, parts.port or (6697 if tls else 6667), tls)
    return IrcDestination(server, channel)
