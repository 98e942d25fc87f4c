"""Every sink of the bridge, in one place: its name (its cursor's, its lock's and its
thread's), whether a configuration turns it on, and how it is built.

``bridge serve`` runs the sinks :func:`build` gives; ``bridge status`` and ``/metrics``
report the cursors of :data:`NAMES`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.config import Config
from bridge.journal import open_journal
from bridge.sinks.base import Sink

if TYPE_CHECKING:
    import zmq

    from bridge.sinks.signing import EnvelopeSigner

NAMES = ("publisher", "amqp")  # the ZeroMQ PUB socket, the AMQP broker


def configured(config: Config) -> list[str]:
    """The sinks *config* turns on: the ZeroMQ publisher always, AMQP with ``[amqp] url``."""
    return [name for name in NAMES if name == "publisher" or config.amqp.url]


def build(config: Config, context: zmq.Context, signer: EnvelopeSigner | None) -> list[Sink]:
    """The configured sinks, each on its own journal connection (one that only moves
    cursors, so it need not sync its commits)."""
    from bridge.sinks.zeromq import Publisher

    sinks: list[Sink] = [
        Publisher(
            open_journal(config, durable=False),
            config.bus.publish,
            context=context,
            poll_interval=config.bus.poll_interval,
            startup_delay=config.bus.startup_delay,
            send_hwm=config.bus.send_hwm,
            signer=signer,
        )
    ]
    if "amqp" in configured(config):
        from bridge.sinks.amqp import AmqpSink, builtin_topics, connection_parameters

        amqp = config.amqp
        sinks.append(
            AmqpSink(
                open_journal(config, durable=False),
                connection_parameters(amqp.url, amqp.ca_certificate, amqp.certificate, amqp.key),
                exchange=amqp.exchange,
                known_topics=builtin_topics(),
            )
        )
    return sinks
