"""mqttkit: an MQTT 3.1.1 / 5.0 client for Python.

The top level is the node.lua / MQTT.js style API (seed 000)::

    import mqttkit as mqtt

    client = mqtt.connect("mqtt://localhost")

    @client.on("connect")
    def on_connect(connack):
        client.subscribe("presence")
        client.publish("presence", "Hello mqtt")

One-shot helpers (connect, do one thing, close): :func:`publish_single`,
:func:`publish_multiple`, :func:`subscribe_simple` (asyncio: in :mod:`mqttkit.aio`). The
asyncio client is :class:`mqttkit.aio.Client`; the NodeMCU API is :mod:`mqttkit.nodemcu`;
the sans-IO core is :mod:`mqttkit.protocol`. This module only re-exports.
"""

from ._api import AckableMessage, Granted
from .netoptions import Proxy
from .options import ClientOptions, ConnectSettings, Server
from .protocol import codec as _codec
from .protocol.errors import (
    CertificateVerifyError,
    ClientClosedError,
    ConnectionLostError,
    ConnectionRefusedError,  # the deprecated alias of ConnectRefusedError, for compatibility
    ConnectRefusedError,
    ConnectTimeoutError,
    HostNotFoundError,
    InvalidArgumentError,
    InvalidOptionError,
    InvalidQoSError,
    InvalidTopicError,
    KeepaliveTimeoutError,
    MalformedPacketError,
    MQTTConnectionError,
    MQTTError,
    OperationError,
    OperationTimeoutError,
    PacketTooLargeError,
    PayloadTypeError,
    ProtocolError,
    ProxyAuthError,
    ProxyError,
    ProxyUnreachableError,
    PublishError,
    QueueFullError,
    ReasonCode,
    RedirectError,
    ServerDisconnectError,
    ServerNotFoundError,
    StoreError,
    SubscribeError,
    TLSError,
    UnknownOptionError,
    UnsubscribeError,
)
from .protocol.packets import ConnAck, Disconnect, Properties, Publish, QoS, Subscription, Will
from .protocol.session import PublishResult
from .protocol.store import MemoryStore, Store
from .routing import topic_matches
from .sync.client import Client, Handle, connect
from .sync.events import EventEmitter
from .sync.oneshot import publish_multiple, publish_single, subscribe_simple

__version__ = "0.1.0.dev0"

#: True when the sans-IO core's hot modules run compiled with mypyc (the optional build:
#: docs/performance.md), False for the pure-Python package (the default install).
compiled: bool = not (_codec.__file__ or "").endswith(".py")

#: An incoming application message (the PUBLISH packet: topic, payload, qos, retain...).
Message = Publish

__all__ = [
    "AckableMessage",
    "CertificateVerifyError",
    "Client",
    "ClientClosedError",
    "ClientOptions",
    "ConnAck",
    "ConnectRefusedError",
    "ConnectSettings",
    "ConnectTimeoutError",
    "ConnectionLostError",
    "ConnectionRefusedError",
    "Disconnect",
    "EventEmitter",
    "Granted",
    "Handle",
    "HostNotFoundError",
    "InvalidArgumentError",
    "InvalidOptionError",
    "InvalidQoSError",
    "InvalidTopicError",
    "KeepaliveTimeoutError",
    "MQTTConnectionError",
    "MQTTError",
    "MalformedPacketError",
    "MemoryStore",
    "Message",
    "OperationError",
    "OperationTimeoutError",
    "PacketTooLargeError",
    "PayloadTypeError",
    "Properties",
    "ProtocolError",
    "Proxy",
    "ProxyAuthError",
    "ProxyError",
    "ProxyUnreachableError",
    "Publish",
    "PublishError",
    "PublishResult",
    "QoS",
    "QueueFullError",
    "ReasonCode",
    "RedirectError",
    "Server",
    "ServerDisconnectError",
    "ServerNotFoundError",
    "Store",
    "StoreError",
    "SubscribeError",
    "Subscription",
    "TLSError",
    "UnknownOptionError",
    "UnsubscribeError",
    "Will",
    "__version__",
    "compiled",
    "connect",
    "publish_multiple",
    "publish_single",
    "subscribe_simple",
    "topic_matches",
]
