"""Annotated wire vectors for every control packet of MQTT 3.1, 3.1.1 and 5.0.

Every byte below was written by hand from the specifications (MQTT 3.1.1 chapter 3, MQTT 5.0
chapters 2 and 3), never produced by running the encoder. Each valid vector is checked three ways,
as mqtt-packet does: parse (decode(bytes) == packet), generate (encode(packet) == bytes) and
mirror (encode(decode(bytes)) == bytes). Invalid vectors are the malformed or forbidden inputs the
specifications name; each must raise the documented error with a message that says what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mqttkit.protocol.codec import PacketBuffer, decode, encode_packet
from mqttkit.protocol.errors import MalformedPacketError, ProtocolError
from mqttkit.protocol.packets import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)


def wire(*parts: str | bytes) -> bytes:
    """Join hex groups ("00 04") and literal byte strings (b"MQTT") into one packet."""
    return b"".join(bytes.fromhex(p) if isinstance(p, str) else p for p in parts)


@dataclass(frozen=True)
class Vector:
    name: str
    levels: tuple[int, ...]
    data: bytes
    packet: Packet


@dataclass(frozen=True)
class Invalid:
    name: str
    level: int
    data: bytes
    error: type[ProtocolError]
    message: str
    """A fragment the error message must contain."""


V31, V311, V5 = 3, 4, 5
V3X = (V31, V311)
ALL = (V31, V311, V5)

# fmt: off
VECTORS: list[Vector] = [
    # ----------------------------------------------------------------------------- MQTT 3.1
    Vector("connect-3.1-credentials", (V31,), wire(
        "10",                   # CONNECT, flags 0000
        "18",                   # remaining length 24
        "00 06", b"MQIsdp",     # protocol name "MQIsdp"
        "03",                   # protocol level 3 (MQTT 3.1)
        "c2",                   # flags: user name, password, clean session
        "00 3c",                # keepalive 60 s
        "00 04", b"paho",       # client id "paho"
        "00 01", b"u",          # user name "u"
        "00 01", b"p",          # password b"p"
    ), Connect("paho", V31, True, 60, "u", b"p")),
    Vector("connect-3.1-will", (V31,), wire(
        "10",                   # CONNECT
        "1a",                   # remaining length 26
        "00 06", b"MQIsdp",     # protocol name
        "03",                   # protocol level 3
        "2e",                   # flags: will retain, will QoS 1, will flag, clean session
        "00 3c",                # keepalive 60 s
        "00 02", b"id",         # client id "id"
        "00 03", b"lwt",        # will topic "lwt"
        "00 03", b"off",        # will message b"off"
    ), Connect("id", V31, True, 60, will=Will("lwt", b"off", 1, True))),
    # --------------------------------------------------------------------------- MQTT 3.1.1
    Vector("connect-3.1.1-minimal", (V311,), wire(
        "10",                   # CONNECT
        "0d",                   # remaining length 13
        "00 04", b"MQTT",       # protocol name "MQTT"
        "04",                   # protocol level 4 (MQTT 3.1.1)
        "02",                   # flags: clean session
        "00 3c",                # keepalive 60 s
        "00 01", b"a",          # client id "a"
    ), Connect("a", V311, True, 60)),
    Vector("connect-3.1.1-will-user-password", (V311,), wire(
        "10",                   # CONNECT
        "28",                   # remaining length 40
        "00 04", b"MQTT",       # protocol name
        "04",                   # protocol level 4
        "ec",                   # flags: user, password, will retain, will QoS 1, will; no clean
        "00 0a",                # keepalive 10 s
        "00 06", b"client",     # client id "client"
        "00 03", b"w/t",        # will topic "w/t"
        "00 03", b"bye",        # will message b"bye"
        "00 04", b"user",       # user name "user"
        "00 04", b"pass",       # password b"pass"
    ), Connect("client", V311, False, 10, "user", b"pass", Will("w/t", b"bye", 1, True))),
    Vector("connect-3.1.1-username-only", (V311,), wire(
        "10",                   # CONNECT
        "10",                   # remaining length 16
        "00 04", b"MQTT",       # protocol name
        "04",                   # protocol level 4
        "82",                   # flags: user name, clean session
        "00 00",                # keepalive 0 (off)
        "00 01", b"c",          # client id "c"
        "00 01", b"u",          # user name "u"
    ), Connect("c", V311, True, 0, "u")),
    Vector("connect-3.1.1-will-qos2-empty-client-id", (V311,), wire(
        "10",                   # CONNECT
        "11",                   # remaining length 17
        "00 04", b"MQTT",       # protocol name
        "04",                   # protocol level 4
        "16",                   # flags: will QoS 2, will flag, clean session
        "00 00",                # keepalive 0
        "00 00",                # client id "" (server assigns one)
        "00 01", b"t",          # will topic "t"
        "00 00",                # will message b""
    ), Connect("", V311, True, 0, will=Will("t", b"", 2))),
    Vector("connack-accepted", V3X, wire(
        "20",                   # CONNACK
        "02",                   # remaining length 2
        "00",                   # acknowledge flags: no session present
        "00",                   # return code 0: accepted
    ), ConnAck()),
    Vector("connack-3.1.1-session-present", (V311,), wire(
        "20", "02",             # CONNACK, remaining length 2
        "01",                   # session present
        "00",                   # accepted
    ), ConnAck(True, 0)),
    Vector("connack-refused-not-authorized", V3X, wire(
        "20", "02",             # CONNACK, remaining length 2
        "00",                   # no session present
        "05",                   # return code 5: not authorized
    ), ConnAck(False, 5)),
    Vector("connack-refused-bad-credentials", V3X, wire(
        "20", "02",             # CONNACK, remaining length 2
        "00",                   # no session present
        "04",                   # return code 4: bad user name or password
    ), ConnAck(False, 4)),
    Vector("publish-3-qos0", V3X, wire(
        "30",                   # PUBLISH, QoS 0, no retain, no dup
        "07",                   # remaining length 7
        "00 03", b"a/b",        # topic "a/b"
        b"hi",                  # payload (no packet id at QoS 0)
    ), Publish("a/b", b"hi")),
    Vector("publish-3-qos0-retain-empty-payload", V3X, wire(
        "31",                   # PUBLISH, QoS 0, retain
        "03",                   # remaining length 3
        "00 01", b"t",          # topic "t"; empty payload
    ), Publish("t", retain=True)),
    Vector("publish-3-qos1", V3X, wire(
        "32",                   # PUBLISH, QoS 1
        "09",                   # remaining length 9
        "00 03", b"a/b",        # topic "a/b"
        "00 0a",                # packet id 10
        b"hi",                  # payload
    ), Publish("a/b", b"hi", 1, packet_id=10)),
    Vector("publish-3-qos1-dup", V3X, wire(
        "3a",                   # PUBLISH, dup, QoS 1
        "05",                   # remaining length 5
        "00 01", b"t",          # topic "t"
        "ff ff",                # packet id 65535
    ), Publish("t", b"", 1, dup=True, packet_id=65535)),
    Vector("publish-3-qos2-dup-retain", V3X, wire(
        "3d",                   # PUBLISH, dup, QoS 2, retain
        "05",                   # remaining length 5
        "00 01", b"t",          # topic "t"
        "12 34",                # packet id 0x1234
    ), Publish("t", b"", 2, True, True, 0x1234)),
    Vector("publish-3-utf8-topic-binary-payload", V3X, wire(
        "30",                   # PUBLISH, QoS 0
        "0a",                   # remaining length 10
        "00 06",                # topic length 6 (bytes, not characters)
        "c3 bc 2f e2 82 ac",    # topic "ü/€": U+00FC, "/", U+20AC in UTF-8
        "00 ff",                # payload b"\x00\xff"
    ), Publish("ü/€", b"\x00\xff")),
    Vector("puback-3", V3X, wire("40", "02", "00 01"), PubAck(1)),       # PUBACK, rl 2, id 1
    Vector("pubrec-3", V3X, wire("50", "02", "00 02"), PubRec(2)),       # PUBREC, rl 2, id 2
    Vector("pubrel-3", V3X, wire("62", "02", "00 03"), PubRel(3)),       # PUBREL flags 0010
    Vector("pubcomp-3", V3X, wire("70", "02", "00 04"), PubComp(4)),     # PUBCOMP, rl 2, id 4
    Vector("subscribe-3", V3X, wire(
        "82",                   # SUBSCRIBE, flags 0010
        "12",                   # remaining length 18
        "00 01",                # packet id 1
        "00 03", b"a/+", "00",  # filter "a/+", requested QoS 0
        "00 03", b"b/#", "01",  # filter "b/#", requested QoS 1
        "00 01", b"c", "02",    # filter "c", requested QoS 2
    ), Subscribe(1, (Subscription("a/+", 0), Subscription("b/#", 1), Subscription("c", 2)))),
    Vector("suback-3", V3X, wire(
        "90",                   # SUBACK
        "06",                   # remaining length 6
        "00 01",                # packet id 1
        "00 01 02",             # granted QoS 0, 1, 2
        "80",                   # failure
    ), SubAck(1, (0, 1, 2, 0x80))),
    Vector("unsubscribe-3", V3X, wire(
        "a2",                   # UNSUBSCRIBE, flags 0010
        "0a",                   # remaining length 10
        "00 02",                # packet id 2
        "00 03", b"a/+",        # filter "a/+"
        "00 01", b"c",          # filter "c"
    ), Unsubscribe(2, ("a/+", "c"))),
    Vector("unsuback-3", V3X, wire("b0", "02", "00 02"), UnsubAck(2)),   # UNSUBACK, id 2, no codes
    Vector("pingreq", ALL, wire("c0", "00"), PingReq()),                 # PINGREQ, rl 0
    Vector("pingresp", ALL, wire("d0", "00"), PingResp()),               # PINGRESP, rl 0
    # DISCONNECT: 3.x is always empty; in 5.0 this is the short form (reason 0, no properties).
    Vector("disconnect-empty", ALL, wire("e0", "00"), Disconnect()),
    # ----------------------------------------------------------------------------- MQTT 5.0
    Vector("connect-5-minimal", (V5,), wire(
        "10",                   # CONNECT
        "0d",                   # remaining length 13
        "00 04", b"MQTT",       # protocol name
        "05",                   # protocol level 5
        "02",                   # flags: clean start
        "00 1e",                # keepalive 30 s
        "00",                   # property length 0
        "00 00",                # client id ""
    ), Connect("", V5, True, 30)),
    Vector("connect-5-properties-user-password", (V5,), wire(
        "10",                   # CONNECT
        "42",                   # remaining length 66
        "00 04", b"MQTT",       # protocol name
        "05",                   # protocol level 5
        "c2",                   # flags: user name, password, clean start
        "00 3c",                # keepalive 60 s
        "28",                   # property length 40
        "11", "00 00 0e 10",    #   session expiry interval 3600
        "15", "00 05", b"SCRAM",  # authentication method "SCRAM"
        "16", "00 02", "01 02",   # authentication data b"\x01\x02"
        "17", "00",             #   request problem information 0
        "19", "01",             #   request response information 1
        "21", "00 14",          #   receive maximum 20
        "22", "00 0a",          #   topic alias maximum 10
        "26", "00 01", b"k", "00 01", b"v",  # user property ("k", "v")
        "27", "00 10 00 00",    #   maximum packet size 1,048,576
        "00 03", b"cid",        # client id "cid"
        "00 04", b"user",       # user name "user"
        "00 02", "00 ff",       # password b"\x00\xff" (binary data)
    ), Connect("cid", V5, True, 60, "user", b"\x00\xff", properties=Properties(
        session_expiry_interval=3600,
        authentication_method="SCRAM",
        authentication_data=b"\x01\x02",
        request_problem_information=0,
        request_response_information=1,
        receive_maximum=20,
        topic_alias_maximum=10,
        user_property=(("k", "v"),),
        maximum_packet_size=1_048_576,
    ))),
    Vector("connect-5-will-properties-password-only", (V5,), wire(
        "10",                   # CONNECT
        "4e",                   # remaining length 78
        "00 04", b"MQTT",       # protocol name
        "05",                   # protocol level 5
        "54",                   # flags: password (allowed alone in 5.0), will QoS 2, will flag
        "00 00",                # keepalive 0
        "00",                   # property length 0
        "00 01", b"w",          # client id "w"
        "2f",                   # will property length 47
        "01", "01",             #   payload format indicator 1 (UTF-8)
        "02", "00 00 00 3c",    #   message expiry interval 60
        "03", "00 0a", b"text/plain",  # content type "text/plain"
        "08", "00 01", b"r",    #   response topic "r"
        "09", "00 01", "ab",    #   correlation data b"\xab"
        "18", "00 00 00 05",    #   will delay interval 5
        "26", "00 01", b"a", "00 01", b"1",  # user property ("a", "1")
        "26", "00 01", b"a", "00 01", b"2",  # user property ("a", "2"): names may repeat
        "00 04", b"dead",       # will topic "dead"
        "00 04", b"gone",       # will payload b"gone"
        "00 02", b"pw",         # password b"pw"
    ), Connect("w", V5, False, 0, None, b"pw", Will("dead", b"gone", 2, False, Properties(
        payload_format_indicator=1,
        message_expiry_interval=60,
        content_type="text/plain",
        response_topic="r",
        correlation_data=b"\xab",
        will_delay_interval=5,
        user_property=(("a", "1"), ("a", "2")),
    )))),
    Vector("connack-5-minimal", (V5,), wire(
        "20",                   # CONNACK
        "03",                   # remaining length 3
        "00",                   # no session present
        "00",                   # reason code 0x00 success
        "00",                   # property length 0
    ), ConnAck()),
    Vector("connack-5-all-server-properties", (V5,), wire(
        "20",                   # CONNACK
        "3d",                   # remaining length 61
        "01",                   # session present
        "00",                   # success
        "3a",                   # property length 58
        "11", "00 00 00 78",    #   session expiry interval 120
        "12", "00 06", b"auto-1",  # assigned client identifier "auto-1"
        "13", "00 14",          #   server keep alive 20
        "1a", "00 05", b"resp/",   # response information "resp/"
        "1f", "00 02", b"ok",   #   reason string "ok"
        "21", "00 64",          #   receive maximum 100
        "22", "00 05",          #   topic alias maximum 5
        "24", "01",             #   maximum QoS 1
        "25", "00",             #   retain available 0
        "26", "00 01", b"x", "00 01", b"y",  # user property ("x", "y")
        "27", "00 01 00 00",    #   maximum packet size 65,536
        "28", "01",             #   wildcard subscription available 1
        "29", "00",             #   subscription identifiers available 0
        "2a", "01",             #   shared subscription available 1
    ), ConnAck(True, 0, Properties(
        session_expiry_interval=120,
        assigned_client_identifier="auto-1",
        server_keep_alive=20,
        response_information="resp/",
        reason_string="ok",
        receive_maximum=100,
        topic_alias_maximum=5,
        maximum_qos=1,
        retain_available=0,
        user_property=(("x", "y"),),
        maximum_packet_size=65_536,
        wildcard_subscription_available=1,
        subscription_identifier_available=0,
        shared_subscription_available=1,
    ))),
    Vector("connack-5-authentication", (V5,), wire(
        "20",                   # CONNACK
        "11",                   # remaining length 17
        "00", "00",             # no session present, success
        "0e",                   # property length 14
        "15", "00 05", b"SCRAM",  # authentication method "SCRAM"
        "16", "00 03", b"abc",  #   authentication data b"abc"
    ), ConnAck(properties=Properties(authentication_method="SCRAM", authentication_data=b"abc"))),
    Vector("connack-5-use-another-server", (V5,), wire(
        "20",                   # CONNACK
        "18",                   # remaining length 24
        "00",                   # no session present
        "9c",                   # reason code 0x9C use another server
        "15",                   # property length 21
        "1c", "00 0a", b"other:1883",  # server reference "other:1883"
        "1f", "00 05", b"moved",       # reason string "moved"
    ), ConnAck(False, 0x9C, Properties(server_reference="other:1883", reason_string="moved"))),
    Vector("connack-5-bad-credentials", (V5,), wire(
        "20", "03",             # CONNACK, remaining length 3
        "00",                   # no session present
        "86",                   # reason code 0x86 bad user name or password
        "00",                   # property length 0
    ), ConnAck(False, 0x86)),
    Vector("publish-5-qos0", (V5,), wire(
        "30",                   # PUBLISH, QoS 0
        "08",                   # remaining length 8
        "00 03", b"a/b",        # topic "a/b"
        "00",                   # property length 0
        b"hi",                  # payload
    ), Publish("a/b", b"hi")),
    Vector("publish-5-qos1-retain-properties", (V5,), wire(
        "33",                   # PUBLISH, QoS 1, retain
        "3a",                   # remaining length 58
        "00 03", b"t/1",        # topic "t/1"
        "00 07",                # packet id 7
        "30",                   # property length 48
        "01", "01",             #   payload format indicator 1
        "02", "00 00 00 1e",    #   message expiry interval 30
        "03", "00 04", b"json",  #  content type "json"
        "08", "00 07", b"reply/t",  # response topic "reply/t"
        "09", "00 03", "00 01 02",  # correlation data b"\x00\x01\x02"
        "26", "00 02", b"k1", "00 02", b"v1",  # user property ("k1", "v1")
        "26", "00 02", b"k1", "00 02", b"v2",  # user property ("k1", "v2"), order kept
        b"{}",                  # payload
    ), Publish("t/1", b"{}", 1, True, False, 7, Properties(
        payload_format_indicator=1,
        message_expiry_interval=30,
        content_type="json",
        response_topic="reply/t",
        correlation_data=b"\x00\x01\x02",
        user_property=(("k1", "v1"), ("k1", "v2")),
    ))),
    Vector("publish-5-qos2-subscription-identifiers", (V5,), wire(
        "34",                   # PUBLISH, QoS 2
        "11",                   # remaining length 17
        "00 01", b"s",          # topic "s"
        "01 02",                # packet id 258
        "0a",                   # property length 10
        "0b", "01",             #   subscription identifier 1
        "0b", "80 01",          #   subscription identifier 128 (two-byte varint)
        "0b", "ff ff ff 7f",    #   subscription identifier 268,435,455 (largest)
        "00",                   # payload b"\x00"
    ), Publish("s", b"\x00", 2, packet_id=258,
               properties=Properties(subscription_identifier=(1, 128, 268_435_455)))),
    Vector("publish-5-topic-alias-empty-topic", (V5,), wire(
        "30",                   # PUBLISH, QoS 0
        "07",                   # remaining length 7
        "00 00",                # topic "" (the alias stands for it)
        "03",                   # property length 3
        "23", "00 03",          #   topic alias 3
        b"x",                   # payload
    ), Publish("", b"x", properties=Properties(topic_alias=3))),
    Vector("publish-5-topic-alias-set-dup", (V5,), wire(
        "3a",                   # PUBLISH, dup, QoS 1
        "12",                   # remaining length 18
        "00 0a", b"long/topic",  # topic "long/topic"
        "ff ff",                # packet id 65535
        "03",                   # property length 3
        "23", "00 01",          #   topic alias 1 (bound to "long/topic")
    ), Publish("long/topic", b"", 1, False, True, 65535, Properties(topic_alias=1))),
    Vector("puback-5-short", (V5,), wire(
        "40", "02",             # PUBACK, remaining length 2: reason 0x00 and no properties
        "00 05",                # packet id 5
    ), PubAck(5)),
    Vector("puback-5-reason-only", (V5,), wire(
        "40", "03",             # PUBACK, remaining length 3: no property length
        "00 05",                # packet id 5
        "10",                   # reason code 0x10 no matching subscribers
    ), PubAck(5, 0x10)),
    Vector("puback-5-properties", (V5,), wire(
        "40",                   # PUBACK
        "14",                   # remaining length 20
        "00 05",                # packet id 5
        "87",                   # reason code 0x87 not authorized
        "10",                   # property length 16
        "1f", "00 06", b"denied",            # reason string "denied"
        "26", "00 01", b"a", "00 01", b"b",  # user property ("a", "b")
    ), PubAck(5, 0x87, Properties(reason_string="denied", user_property=(("a", "b"),)))),
    Vector("pubrec-5-short", (V5,), wire("50", "02", "00 06"), PubRec(6)),  # PUBREC, id 6
    Vector("pubrec-5-reason-only", (V5,), wire(
        "50", "03",             # PUBREC, remaining length 3
        "00 06",                # packet id 6
        "80",                   # reason code 0x80 unspecified error
    ), PubRec(6, 0x80)),
    Vector("pubrec-5-properties-success", (V5,), wire(
        "50",                   # PUBREC
        "09",                   # remaining length 9
        "00 06",                # packet id 6
        "00",                   # success (needed because properties follow)
        "05",                   # property length 5
        "1f", "00 02", b"ok",   #   reason string "ok"
    ), PubRec(6, 0, Properties(reason_string="ok"))),
    Vector("pubrel-5-short", (V5,), wire("62", "02", "00 07"), PubRel(7)),  # PUBREL, id 7
    Vector("pubrel-5-reason-only", (V5,), wire(
        "62", "03",             # PUBREL (flags 0010), remaining length 3
        "00 07",                # packet id 7
        "92",                   # reason code 0x92 packet identifier not found
    ), PubRel(7, 0x92)),
    Vector("pubrel-5-properties", (V5,), wire(
        "62",                   # PUBREL
        "0e",                   # remaining length 14
        "00 07",                # packet id 7
        "92",                   # packet identifier not found
        "0a",                   # property length 10
        "1f", "00 07", b"unknown",  # reason string "unknown"
    ), PubRel(7, 0x92, Properties(reason_string="unknown"))),
    Vector("pubcomp-5-short", (V5,), wire("70", "02", "00 08"), PubComp(8)),  # PUBCOMP, id 8
    Vector("pubcomp-5-reason-only", (V5,), wire(
        "70", "03",             # PUBCOMP, remaining length 3
        "00 08",                # packet id 8
        "92",                   # packet identifier not found
    ), PubComp(8, 0x92)),
    Vector("pubcomp-5-properties", (V5,), wire(
        "70",                   # PUBCOMP
        "0b",                   # remaining length 11
        "00 08",                # packet id 8
        "00",                   # success
        "07",                   # property length 7
        "26", "00 01", b"k", "00 01", b"v",  # user property ("k", "v")
    ), PubComp(8, 0, Properties(user_property=(("k", "v"),)))),
    Vector("subscribe-5-options", (V5,), wire(
        "82",                   # SUBSCRIBE, flags 0010
        "2a",                   # remaining length 42
        "00 0a",                # packet id 10
        "0a",                   # property length 10
        "0b", "ac 02",          #   subscription identifier 300 (0xAC 0x02)
        "26", "00 01", b"u", "00 01", b"1",  # user property ("u", "1")
        "00 03", b"a/+",        # filter "a/+"
        "05",                   #   options: QoS 1, no local
        "00 03", b"b/#",        # filter "b/#"
        "1a",                   #   options: QoS 2, retain as published, retain handling 1
        "00 0a", b"$share/g/c",  # shared filter "$share/g/c"
        "20",                   #   options: QoS 0, retain handling 2
        "00 01", b"d",          # filter "d"
        "2d",                   #   options: QoS 1, no local, retain as published, handling 2
    ), Subscribe(10, (
        Subscription("a/+", 1, no_local=True),
        Subscription("b/#", 2, retain_as_published=True, retain_handling=1),
        Subscription("$share/g/c", 0, retain_handling=2),
        Subscription("d", 1, True, True, 2),
    ), Properties(subscription_identifier=300, user_property=(("u", "1"),)))),
    Vector("subscribe-5-minimal", (V5,), wire(
        "82",                   # SUBSCRIBE
        "07",                   # remaining length 7
        "00 01",                # packet id 1
        "00",                   # property length 0
        "00 01", b"#",          # filter "#"
        "00",                   #   options: QoS 0
    ), Subscribe(1, (Subscription("#"),))),
    Vector("suback-5-every-code", (V5,), wire(
        "90",                   # SUBACK
        "19",                   # remaining length 25
        "00 0a",                # packet id 10
        "0a",                   # property length 10
        "1f", "00 07", b"partial",  # reason string "partial"
        "01 02 00",             # granted QoS 1, 2, 0
        "80 83 87 8f",          # unspecified, implementation specific, not authorized, bad filter
        "91 97 9e",             # packet id in use, quota exceeded, shared subs not supported
        "a1 a2",                # subscription ids not supported, wildcards not supported
    ), SubAck(10, (1, 2, 0, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2),
              Properties(reason_string="partial"))),
    Vector("suback-5-minimal", (V5,), wire(
        "90", "04",             # SUBACK, remaining length 4
        "00 01",                # packet id 1
        "00",                   # property length 0
        "00",                   # granted QoS 0
    ), SubAck(1, (0,))),
    Vector("unsubscribe-5-properties", (V5,), wire(
        "a2",                   # UNSUBSCRIBE, flags 0010
        "1b",                   # remaining length 27
        "00 0b",                # packet id 11
        "07",                   # property length 7
        "26", "00 01", b"k", "00 01", b"v",  # user property ("k", "v")
        "00 03", b"a/+",        # filter "a/+"
        "00 0a", b"$share/g/c",  # filter "$share/g/c"
    ), Unsubscribe(11, ("a/+", "$share/g/c"), Properties(user_property=(("k", "v"),)))),
    Vector("unsubscribe-5-minimal", (V5,), wire(
        "a2", "06",             # UNSUBSCRIBE, remaining length 6
        "00 01",                # packet id 1
        "00",                   # property length 0
        "00 01", b"x",          # filter "x"
    ), Unsubscribe(1, ("x",))),
    Vector("unsuback-5-codes", (V5,), wire(
        "b0",                   # UNSUBACK
        "10",                   # remaining length 16
        "00 0b",                # packet id 11
        "06",                   # property length 6
        "1f", "00 03", b"why",  #   reason string "why"
        "00 11",                # success, no subscription existed
        "80 83 87 8f 91",       # unspecified, impl. specific, not authorized, bad filter, id in use
    ), UnsubAck(11, (0, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91), Properties(reason_string="why"))),
    Vector("unsuback-5-minimal", (V5,), wire(
        "b0", "04",             # UNSUBACK, remaining length 4
        "00 01",                # packet id 1
        "00",                   # property length 0
        "00",                   # success
    ), UnsubAck(1, (0,))),
    Vector("disconnect-5-reason-only", (V5,), wire(
        "e0", "01",             # DISCONNECT, remaining length 1: no property length
        "04",                   # reason code 0x04 disconnect with will message
    ), Disconnect(0x04)),
    Vector("disconnect-5-properties", (V5,), wire(
        "e0",                   # DISCONNECT
        "1c",                   # remaining length 28
        "9c",                   # reason code 0x9C use another server
        "1a",                   # property length 26
        "11", "00 00 00 00",    #   session expiry interval 0
        "1c", "00 04", b"host",  #  server reference "host"
        "1f", "00 04", b"bye!",  #  reason string "bye!"
        "26", "00 01", b"a", "00 01", b"b",  # user property ("a", "b")
    ), Disconnect(0x9C, Properties(
        session_expiry_interval=0,
        server_reference="host",
        reason_string="bye!",
        user_property=(("a", "b"),),
    ))),
    Vector("auth-5-empty", (V5,), wire(
        "f0", "00",             # AUTH, remaining length 0: success, no properties
    ), Auth()),
    Vector("auth-5-reason-only", (V5,), wire(
        "f0", "01",             # AUTH, remaining length 1
        "19",                   # reason code 0x19 re-authenticate
    ), Auth(0x19)),
    Vector("auth-5-properties", (V5,), wire(
        "f0",                   # AUTH
        "15",                   # remaining length 21
        "18",                   # reason code 0x18 continue authentication
        "13",                   # property length 19
        "15", "00 05", b"SCRAM",      # authentication method "SCRAM"
        "16", "00 03", "01 02 03",    # authentication data b"\x01\x02\x03"
        "1f", "00 02", b"go",         # reason string "go"
    ), Auth(0x18, Properties(
        authentication_method="SCRAM",
        authentication_data=b"\x01\x02\x03",
        reason_string="go",
    ))),
]

#: Valid but not canonical: the spec allows the long form where the short form would do. Parse
#: gives the packet; generate gives the canonical bytes (the last element).
NON_CANONICAL: list[tuple[str, int, bytes, Packet, bytes]] = [
    ("puback-5-reason-and-empty-properties", V5,
     wire("40", "04", "00 05", "00", "00"),    # PUBACK rl 4: id 5, success, property length 0
     PubAck(5), wire("40", "02", "00 05")),
    ("pubrel-5-reason-and-empty-properties", V5,
     wire("62", "04", "00 07", "92", "00"),    # PUBREL rl 4: id 7, 0x92, property length 0
     PubRel(7, 0x92), wire("62", "03", "00 07", "92")),
    ("disconnect-5-success-and-empty-properties", V5,
     wire("e0", "02", "00", "00"),             # DISCONNECT rl 2: success, property length 0
     Disconnect(), wire("e0", "00")),
    ("auth-5-success-and-empty-properties", V5,
     wire("f0", "02", "00", "00"),             # AUTH rl 2: success, property length 0
     Auth(), wire("f0", "00")),
    ("connect-5-declared-level-wins", V311,    # CONNECT decodes at the level it declares
     wire("10", "0d", "00 04", b"MQTT", "05", "02", "00 1e", "00", "00 00"),
     Connect("", V5, True, 30),
     wire("10", "0d", "00 04", b"MQTT", "05", "02", "00 1e", "00", "00 00")),
]

M, P = MalformedPacketError, ProtocolError
FLAGS = "reserved fixed-header flags"
CONNECT_BODY = wire("00 04", b"MQTT", "04", "02", "00 3c", "00 01", b"a")  # 13 bytes, as above

INVALID: list[Invalid] = [
    # -- [MQTT-2.1.3-1] reserved fixed-header flags, on every type that has them
    Invalid("flags-connect", V311, wire("11", "0d") + CONNECT_BODY, M, FLAGS),
    Invalid("flags-connack", V311, wire("21", "02", "00 00"), M, FLAGS),
    Invalid("flags-puback", V311, wire("42", "02", "00 01"), M, FLAGS),
    Invalid("flags-pubrec", V311, wire("51", "02", "00 01"), M, FLAGS),
    Invalid("flags-pubrel-0000", V311, wire("60", "02", "00 01"), M, FLAGS),
    Invalid("flags-pubrel-0011", V5, wire("63", "02", "00 01"), M, FLAGS),
    Invalid("flags-pubcomp", V311, wire("78", "02", "00 01"), M, FLAGS),
    Invalid("flags-subscribe-0000", V311, wire("80", "06", "00 01", "00 01", b"t", "00"), M, FLAGS),
    Invalid("flags-suback", V311, wire("92", "03", "00 01", "00"), M, FLAGS),
    Invalid("flags-unsubscribe", V311, wire("a0", "05", "00 01", "00 01", b"t"), M, FLAGS),
    Invalid("flags-unsuback", V311, wire("b1", "02", "00 01"), M, FLAGS),
    Invalid("flags-pingreq", V311, wire("c1", "00"), M, FLAGS),
    Invalid("flags-pingresp", V311, wire("d2", "00"), M, FLAGS),
    Invalid("flags-disconnect", V311, wire("e4", "00"), M, FLAGS),
    Invalid("flags-auth", V5, wire("f1", "00"), M, FLAGS),
    # -- packet types
    Invalid("type-0-reserved", V311, wire("00", "00"), M, "reserved packet type 0"),
    Invalid("type-0-reserved-v5", V5, wire("00", "00"), M, "reserved packet type 0"),
    Invalid("auth-in-3.1.1", V311, wire("f0", "00"), M, "reserved packet type 15"),
    Invalid("auth-in-3.1", V31, wire("f0", "00"), M, "reserved packet type 15"),
    # -- PUBLISH fixed header, [MQTT-3.3.1-4] and [MQTT-3.3.1-2]
    Invalid("publish-qos3", V311, wire("36", "05", "00 01", b"t", "00 01"), M, "QoS 3"),
    Invalid("publish-qos3-v5", V5, wire("36", "06", "00 01", b"t", "00 01", "00"), M, "QoS 3"),
    Invalid("publish-dup-at-qos0", V311, wire("38", "03", "00 01", b"t"), M, "DUP"),
    # -- packet identifier 0, [MQTT-2.2.1-3]
    Invalid("publish-packet-id-0", V311, wire("32", "05", "00 01", b"t", "00 00"), M,
            "packet identifier 0"),
    Invalid("puback-packet-id-0", V311, wire("40", "02", "00 00"), M, "packet identifier 0"),
    Invalid("pubrec-packet-id-0", V5, wire("50", "02", "00 00"), M, "packet identifier 0"),
    Invalid("pubrel-packet-id-0", V311, wire("62", "02", "00 00"), M, "packet identifier 0"),
    Invalid("pubcomp-packet-id-0", V311, wire("70", "02", "00 00"), M, "packet identifier 0"),
    Invalid("subscribe-packet-id-0", V311, wire("82", "06", "00 00", "00 01", b"t", "00"), M,
            "packet identifier 0"),
    Invalid("suback-packet-id-0", V311, wire("90", "03", "00 00", "00"), M, "packet identifier 0"),
    Invalid("unsubscribe-packet-id-0", V311, wire("a2", "05", "00 00", "00 01", b"t"), M,
            "packet identifier 0"),
    Invalid("unsuback-packet-id-0", V311, wire("b0", "02", "00 00"), M, "packet identifier 0"),
    # -- PUBLISH topic, [MQTT-3.3.2-2], [MQTT-4.7.3-1]
    Invalid("publish-topic-plus", V311, wire("30", "05", "00 03", b"a/+"), M, "wildcard"),
    Invalid("publish-topic-hash", V5, wire("30", "04", "00 01", b"#", "00"), M, "wildcard"),
    Invalid("publish-topic-empty", V311, wire("30", "02", "00 00"), M, "empty topic"),
    Invalid("publish-5-topic-empty-no-alias", V5, wire("30", "03", "00 00", "00"), M,
            "empty topic"),
    # -- UTF-8 strings, [MQTT-1.5.4-1] and [MQTT-1.5.4-2]
    Invalid("utf8-invalid-byte", V311, wire("30", "03", "00 01", "ff"), M, "invalid UTF-8"),
    Invalid("utf8-overlong-nul", V311, wire("30", "04", "00 02", "c0 80"), M, "invalid UTF-8"),
    Invalid("utf8-truncated-sequence", V311, wire("30", "03", "00 01", "e2"), M, "invalid UTF-8"),
    Invalid("utf8-surrogate-d800", V311, wire("30", "05", "00 03", "ed a0 80"), M,
            "invalid UTF-8"),
    Invalid("utf8-nul-in-topic", V311, wire("30", "03", "00 01", "00"), M, "U+0000"),
    Invalid("utf8-nul-in-client-id", V311, wire(
        "10", "0d", "00 04", b"MQTT", "04", "02", "00 3c",
        "00 01", "00",          # client id "\0"
    ), M, "U+0000"),
    Invalid("utf8-surrogate-in-filter", V311, wire(
        "82", "08", "00 01",
        "00 03", "ed b0 80",    # filter: the lone surrogate U+DC00 encoded
        "00",
    ), M, "invalid UTF-8"),
    Invalid("utf8-invalid-in-user-property", V5, wire(
        "20", "0a", "00", "00",
        "07", "26", "00 01", "ff", "00 01", b"v",  # user property name b"\xff"
    ), M, "invalid UTF-8"),
    # -- lengths: framing, truncation, trailing bytes
    Invalid("remaining-length-five-bytes", V311, wire("30", "ff ff ff ff 01"), M,
            "longer than four bytes"),
    Invalid("truncated-frame", V311, wire("30", "05", "00 03", b"a/"), M,
            "exactly one whole packet"),
    Invalid("truncated-header", V311, wire("30", "80"), M, "exactly one whole packet"),
    Invalid("two-packets", V311, wire("c0", "00", "c0", "00"), M, "exactly one whole packet"),
    Invalid("connect-truncated-name", V311, wire("10", "03", "00 04", b"M"), M, "shorter"),
    Invalid("puback-truncated-id", V311, wire("40", "01", "00"), M, "shorter"),
    Invalid("publish-shorter-than-topic-length", V311, wire("30", "01", "00"), M, "shorter"),
    Invalid("publish-topic-past-end", V311, wire("30", "03", "00 05", b"a"), M, "topic longer"),
    Invalid("publish-qos1-without-id", V311, wire("32", "03", "00 01", b"t"), M,
            "packet identifier"),
    Invalid("publish-5-missing-property-length", V5, wire("30", "03", "00 01", b"t"), M,
            "shorter"),
    Invalid("property-length-past-end", V5, wire("20", "04", "00", "00", "05", "25"), M,
            "property length exceeds"),
    Invalid("property-value-truncated", V5, wire("20", "05", "00", "00", "02", "21", "00"), M,
            "shorter"),
    Invalid("pingreq-trailing", V311, wire("c0", "01", "00"), M, "trailing bytes"),
    Invalid("puback-3.1.1-trailing", V311, wire("40", "03", "00 01", "00"), M, "trailing bytes"),
    Invalid("connack-3.1.1-trailing", V311, wire("20", "03", "00", "00", "00"), M,
            "trailing bytes"),
    Invalid("disconnect-3.1.1-trailing", V311, wire("e0", "01", "00"), M, "trailing bytes"),
    Invalid("unsuback-3.1.1-trailing", V311, wire("b0", "03", "00 01", "00"), M,
            "trailing bytes"),
    # -- CONNECT, [MQTT-3.1.2-1..3], [MQTT-3.1.2-11..14], [MQTT-3.1.2-22]
    Invalid("connect-protocol-name", V311, wire("10", "0d", "00 04", b"MQTX", "04", "02",
                                                "00 3c", "00 01", b"a"), M, "protocol name"),
    Invalid("connect-protocol-level-6", V311, wire("10", "0d", "00 04", b"MQTT", "06", "02",
                                                   "00 3c", "00 01", b"a"), M, "level 6"),
    Invalid("connect-mqisdp-level-4", V311, wire("10", "0f", "00 06", b"MQIsdp", "04", "02",
                                                 "00 3c", "00 01", b"a"), M, "level 4"),
    Invalid("connect-reserved-flag", V311, wire("10", "0d", "00 04", b"MQTT", "04", "03",
                                                "00 3c", "00 01", b"a"), M, "reserved flag"),
    Invalid("connect-will-qos-without-will", V311, wire("10", "0d", "00 04", b"MQTT", "04", "0a",
                                                        "00 3c", "00 01", b"a"), M,
            "without will flag"),
    Invalid("connect-will-retain-without-will", V311, wire("10", "0d", "00 04", b"MQTT", "04",
                                                           "22", "00 3c", "00 01", b"a"), M,
            "without will flag"),
    Invalid("connect-will-qos3", V311, wire("10", "0d", "00 04", b"MQTT", "04", "1e",
                                            "00 3c", "00 01", b"a"), M, "will QoS 3"),
    Invalid("connect-3.1.1-password-without-user", V311, wire(
        "10", "10", "00 04", b"MQTT", "04", "42", "00 3c", "00 01", b"a",
        "00 01", b"p",          # password, but no user name flag
    ), M, "password without user name"),
    # -- CONNACK, [MQTT-3.2.2-1], [MQTT-3.2.2-4] / [MQTT-3.2.2-6]
    Invalid("connack-reserved-flags", V311, wire("20", "02", "02", "00"), M, "reserved flags"),
    Invalid("connack-5-reserved-flags", V5, wire("20", "03", "80", "00", "00"), M,
            "reserved flags"),
    Invalid("connack-session-present-with-failure", V311, wire("20", "02", "01", "05"), M,
            "session present"),
    Invalid("connack-5-session-present-with-failure", V5, wire("20", "03", "01", "87", "00"), M,
            "session present"),
    # -- properties (MQTT 5 section 2.2.2)
    Invalid("property-unknown-0x14", V5, wire("20", "05", "00", "00", "02", "14", "00"), M,
            "unknown property identifier 0x14"),
    Invalid("property-unknown-0x00", V5, wire("30", "06", "00 01", b"t", "02", "00", "00"), M,
            "unknown property identifier 0x00"),
    Invalid("property-session-expiry-in-publish", V5, wire(
        "30", "09", "00 01", b"t", "05", "11", "00 00 00 3c"), P,
        "session_expiry_interval is not allowed in PUBLISH"),
    Invalid("property-topic-alias-in-connack", V5, wire(
        "20", "06", "00", "00", "03", "23", "00 01"), P, "topic_alias is not allowed in CONNACK"),
    Invalid("property-will-delay-in-connect", V5, wire(
        "10", "12", "00 04", b"MQTT", "05", "02", "00 1e",
        "05", "18", "00 00 00 05",  # will delay interval belongs in the Will Properties
        "00 00"), P, "will_delay_interval is not allowed in CONNECT"),
    Invalid("property-session-expiry-in-will", V5, wire(
        "10", "18", "00 04", b"MQTT", "05", "06", "00 00", "00", "00 00",
        "05", "11", "00 00 00 01",  # will properties: session expiry interval
        "00 01", b"t", "00 00"), P, "not allowed in Will Properties"),
    Invalid("property-content-type-in-puback", V5, wire(
        "40", "0a", "00 01", "00", "06", "03", "00 03", b"abc"), P,
        "content_type is not allowed in PUBACK"),
    Invalid("property-session-expiry-in-auth", V5, wire(
        "f0", "07", "18", "05", "11", "00 00 00 01"), P, "not allowed in AUTH"),
    Invalid("property-reason-string-in-subscribe", V5, wire(
        "82", "0b", "00 01", "04", "1f", "00 01", b"r", "00 01", b"t", "00"), P,
        "reason_string is not allowed in SUBSCRIBE"),
    Invalid("property-duplicate-receive-maximum", V5, wire(
        "20", "09", "00", "00", "06", "21", "00 0a", "21", "00 0b"), P, "more than once"),
    Invalid("property-duplicate-content-type", V5, wire(
        "30", "0c", "00 01", b"t", "08", "03", "00 01", b"a", "03", "00 01", b"b"), P,
        "more than once"),
    Invalid("property-duplicate-subscription-identifier", V5, wire(
        "82", "0b", "00 01", "04", "0b", "01", "0b", "02", "00 01", b"t", "00"), P,
        "more than once"),
    Invalid("property-retain-available-2", V5, wire("20", "05", "00", "00", "02", "25", "02"), P,
            "must be 0 or 1"),
    Invalid("property-maximum-qos-2", V5, wire("20", "05", "00", "00", "02", "24", "02"), P,
            "must be 0 or 1"),
    Invalid("property-payload-format-2", V5, wire("30", "06", "00 01", b"t", "02", "01", "02"), P,
            "must be 0 or 1"),
    Invalid("property-request-problem-information-2", V5, wire(
        "10", "0f", "00 04", b"MQTT", "05", "02", "00 1e", "02", "17", "02", "00 00"), P,
        "must be 0 or 1"),
    Invalid("property-receive-maximum-0", V5, wire(
        "20", "06", "00", "00", "03", "21", "00 00"), P, "receive_maximum must not be 0"),
    Invalid("property-maximum-packet-size-0", V5, wire(
        "20", "08", "00", "00", "05", "27", "00 00 00 00"), P, "must not be 0"),
    Invalid("property-topic-alias-0", V5, wire("30", "07", "00 01", b"t", "03", "23", "00 00"), P,
            "topic_alias must not be 0"),
    Invalid("property-subscription-identifier-0", V5, wire(
        "82", "09", "00 01", "02", "0b", "00", "00 01", b"t", "00"), P, "must not be 0"),
    # -- SUBSCRIBE payload, [MQTT-3.8.3-2..5] ([MQTT-3-8.3-4] in 3.1.1)
    Invalid("subscribe-qos3", V311, wire("82", "06", "00 01", "00 01", b"t", "03"), M, "QoS 3"),
    Invalid("subscribe-5-qos3", V5, wire("82", "07", "00 01", "00", "00 01", b"t", "03"), M,
            "QoS 3"),
    Invalid("subscribe-3.1.1-reserved-bit-2", V311, wire("82", "06", "00 01", "00 01", b"t", "04"),
            M, "reserved bits"),
    Invalid("subscribe-5-reserved-bit-6", V5, wire("82", "07", "00 01", "00", "00 01", b"t", "40"),
            M, "reserved bits"),
    Invalid("subscribe-5-reserved-bit-7", V5, wire("82", "07", "00 01", "00", "00 01", b"t", "80"),
            M, "reserved bits"),
    Invalid("subscribe-5-retain-handling-3", V5, wire(
        "82", "07", "00 01", "00", "00 01", b"t", "30"), M, "reserved bits"),
    Invalid("subscribe-no-filter", V311, wire("82", "02", "00 01"), M, "without a topic filter"),
    Invalid("subscribe-5-no-filter", V5, wire("82", "03", "00 01", "00"), M,
            "without a topic filter"),
    Invalid("subscribe-5-no-local-on-shared", V5, wire(
        "82", "10", "00 01", "00", "00 0a", b"$share/g/c", "04"), P, "No Local"),
    Invalid("subscribe-filter-without-options", V311, wire("82", "05", "00 01", "00 01", b"t"), M,
            "shorter"),
    # -- acknowledgement payloads
    Invalid("suback-no-codes", V311, wire("90", "02", "00 01"), M, "without a return code"),
    Invalid("suback-5-no-codes", V5, wire("90", "03", "00 01", "00"), M, "without a return code"),
    Invalid("unsubscribe-no-filter", V311, wire("a2", "02", "00 01"), M, "without a topic filter"),
    Invalid("unsubscribe-5-no-filter", V5, wire("a2", "03", "00 01", "00"), M,
            "without a topic filter"),
    Invalid("unsuback-5-no-codes", V5, wire("b0", "03", "00 01", "00"), M, "without a reason code"),
    # -- reason codes not valid for the packet type (MQTT 5 sections 3.x.2.1, 3.1.1 3.2.2.3, 3.9.3)
    Invalid("reason-connack-3.1.1-6", V311, wire("20", "02", "00", "06"), M,
            "reason code 0x06 is not valid in CONNACK"),
    Invalid("reason-connack-5-0x01", V5, wire("20", "03", "00", "01", "00"), M,
            "reason code 0x01 is not valid in CONNACK"),
    Invalid("reason-puback-0x92", V5, wire("40", "03", "00 01", "92"), M,
            "reason code 0x92 is not valid in PUBACK"),
    Invalid("reason-pubrec-0x92", V5, wire("50", "03", "00 01", "92"), M,
            "reason code 0x92 is not valid in PUBREC"),
    Invalid("reason-pubrel-0x10", V5, wire("62", "03", "00 01", "10"), M,
            "reason code 0x10 is not valid in PUBREL"),
    Invalid("reason-pubcomp-0x80", V5, wire("70", "03", "00 01", "80"), M,
            "reason code 0x80 is not valid in PUBCOMP"),
    Invalid("reason-suback-3.1.1-0x03", V311, wire("90", "03", "00 01", "03"), M,
            "reason code 0x03 is not valid in SUBACK"),
    Invalid("reason-suback-5-0x04", V5, wire("90", "04", "00 01", "00", "04"), M,
            "reason code 0x04 is not valid in SUBACK"),
    Invalid("reason-unsuback-0x10", V5, wire("b0", "04", "00 01", "00", "10"), M,
            "reason code 0x10 is not valid in UNSUBACK"),
    Invalid("reason-disconnect-0x01", V5, wire("e0", "01", "01"), M,
            "reason code 0x01 is not valid in DISCONNECT"),
    Invalid("reason-auth-0x80", V5, wire("f0", "01", "80"), M,
            "reason code 0x80 is not valid in AUTH"),
]
# fmt: on


def _remaining_length(data: bytes) -> tuple[int, int]:
    """(value, bytes used) of the Remaining Length: an independent reading of section 2.1.4."""
    value = 0
    for i in range(4):
        byte = data[1 + i]
        value += (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            return value, i + 1
    raise AssertionError("remaining length longer than four bytes")


def _cases() -> list[object]:
    return [pytest.param(v, level, id=f"{v.name}@{level}") for v in VECTORS for level in v.levels]


def test_vectors_are_self_consistent() -> None:
    """Guard the hand arithmetic: each written remaining length matches the bytes that follow."""
    names = [v.name for v in VECTORS] + [n[0] for n in NON_CANONICAL] + [i.name for i in INVALID]
    assert len(names) == len(set(names))
    for vector in VECTORS:
        value, used = _remaining_length(vector.data)
        assert value == len(vector.data) - 1 - used, vector.name


def test_every_packet_type_and_level_has_vectors() -> None:
    covered = {(type(v.packet), level) for v in VECTORS for level in v.levels}
    every = {Connect, ConnAck, Publish, PubAck, PubRec, PubRel, PubComp, Subscribe, SubAck}
    every |= {Unsubscribe, UnsubAck, PingReq, PingResp, Disconnect}
    for level in ALL:
        assert {cls for cls, lvl in covered if lvl == level} >= every, level
    assert (Auth, V5) in covered


@pytest.mark.parametrize(("vector", "level"), _cases())
def test_parse(vector: Vector, level: int) -> None:
    assert decode(vector.data, level) == vector.packet


@pytest.mark.parametrize(("vector", "level"), _cases())
def test_generate(vector: Vector, level: int) -> None:
    assert encode_packet(vector.packet, level) == vector.data


@pytest.mark.parametrize(("vector", "level"), _cases())
def test_mirror(vector: Vector, level: int) -> None:
    assert encode_packet(decode(vector.data, level), level) == vector.data


@pytest.mark.parametrize(
    ("data", "level", "packet", "canonical"),
    [pytest.param(d, lvl, p, c, id=n) for n, lvl, d, p, c in NON_CANONICAL],
)
def test_non_canonical_forms(data: bytes, level: int, packet: Packet, canonical: bytes) -> None:
    assert decode(data, level) == packet
    assert encode_packet(packet, level) == canonical
    assert decode(canonical, level) == packet


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in INVALID])
def test_invalid(case: Invalid) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(case.data, case.level)
    assert type(info.value) is case.error, f"{type(info.value).__name__}: {info.value}"
    assert case.message in str(info.value)
    expected_code = 0x81 if case.error is MalformedPacketError else 0x82
    assert info.value.reason_code == expected_code


def test_invalid_vectors_fail_the_same_through_the_buffer() -> None:
    """The session path (PacketBuffer.feed + decode_packet) agrees with decode()."""
    from mqttkit.protocol.codec import decode_packet

    def receive(case: Invalid) -> None:
        for first, data, start, end in PacketBuffer().feed(case.data):
            decode_packet(first, data, start, end, case.level)

    for case in INVALID:
        if case.name in {"truncated-frame", "truncated-header", "two-packets"}:
            continue  # decode()'s own checks: the buffer just waits, or yields two packets
        with pytest.raises(ProtocolError) as info:
            receive(case)
        assert type(info.value) is case.error, case.name


def test_auth_cannot_be_encoded_before_mqtt_5() -> None:
    with pytest.raises(ValueError, match="AUTH exists only in MQTT 5"):
        encode_packet(Auth(), V311)


def test_max_packet_size_refuses_at_the_header() -> None:
    """The header alone (no body yet) is enough to refuse an oversized packet: reason 0x95."""
    buffer = PacketBuffer(max_packet_size=100)
    header = wire(
        "30",  # PUBLISH
        "e8 07",  # remaining length 1000 (0x68 | 0x80, 0x07): 1003 bytes in all
    )
    with pytest.raises(ProtocolError) as info:
        buffer.feed(header)
    assert type(info.value) is ProtocolError
    assert info.value.reason_code == 0x95
    assert "1003 bytes exceeds the maximum packet size of 100" in str(info.value)


def test_max_packet_size_counts_the_whole_packet() -> None:
    body = wire("00 01", b"t") + b"x" * 95  # 98 bytes: with "30 62" the packet is 100 bytes
    exact = wire("30", "62") + body
    assert [(f, bytes(d[s:e])) for f, d, s, e in PacketBuffer(100).feed(exact)] == [(0x30, body)]
    with pytest.raises(ProtocolError, match="101 bytes"):
        PacketBuffer(100).feed(wire("30", "63") + body + b"x")


def test_max_packet_size_waits_for_a_whole_header() -> None:
    buffer = PacketBuffer(max_packet_size=100)
    assert buffer.feed(wire("30", "e8")) == []  # continuation bit: length not known yet
    with pytest.raises(ProtocolError):
        buffer.feed(wire("07"))
