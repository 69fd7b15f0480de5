"""The ``servers`` option and the server rotation, without a network: which server each attempt
goes to, when the backoff comes, MQTT 5 redirections (followed, bounded, loops refused) and the
parsing of every entry form (URL, ``(host, port)``, MQTT.js dict, :class:`mqttkit.Server`)."""

from __future__ import annotations

import pytest

import mqttkit
from mqttkit.aio.servers import MAX_REDIRECTS, Next, ServerRotation
from mqttkit.options import parse_options, parse_server_reference
from mqttkit.protocol.errors import (
    ConnectRefusedError,
    ConnectTimeoutError,
    ReasonCode,
    RedirectError,
    ServerDisconnectError,
    ServerNotFoundError,
)
from mqttkit.protocol.packets import MQTT_3_1_1, MQTT_5

A, B, C = (mqttkit.Server("10.0.0.1", 1883), mqttkit.Server("10.0.0.2", 1883),
           mqttkit.Server("10.0.0.3", 1883))  # fmt: skip
DOWN = ServerNotFoundError("nothing listens there")


def redirect(code: int, reference: str | None, *, connack: bool = True) -> Exception:
    if connack:
        return ConnectRefusedError(code, MQTT_5, "", reference)
    return ServerDisconnectError(code, "", reference)


# -- options ---------------------------------------------------------------------------------


def test_every_entry_form_parses_and_scheme_less_entries_take_the_clients_transport() -> None:
    options = parse_options(
        "mqtts://",  # no host: sets only the scheme of the entries without one
        servers=[
            "mqtt://a.example:1884",
            ("b.example", 8884),
            {"host": "c.example", "port": 1885, "protocol": "mqtt"},
            {"hostname": "d.example"},
            mqttkit.Server("e.example", 9000, "ws", "/ws"),
            "ws://f.example/mqtt-ws",
        ],
    )
    assert options.servers == (
        mqttkit.Server("a.example", 1884, "tcp"),
        mqttkit.Server("b.example", 8884, "tls"),
        mqttkit.Server("c.example", 1885, "tcp"),
        mqttkit.Server("d.example", 8883, "tls"),  # the transport's default port
        mqttkit.Server("e.example", 9000, "ws", "/ws"),
        mqttkit.Server("f.example", 80, "ws", "/mqtt-ws"),
    )
    assert options.url == "mqtt://a.example:1884"
    assert [s.url for s in options.servers[:2]] == [
        "mqtt://a.example:1884",
        "mqtts://b.example:8884",
    ]


def test_the_seed_dict_spells_it_servers_as_mqtt_js_does() -> None:
    client = mqttkit.Client({"servers": [{"host": "x", "port": 1}, {"host": "y", "port": 2}]})
    assert client.options.servers == (mqttkit.Server("x", 1), mqttkit.Server("y", 2))
    assert client.server == mqttkit.Server("x", 1)  # before any attempt: the first


def test_without_servers_the_url_is_the_one_server() -> None:
    assert parse_options("mqtt://h:1999").servers == (mqttkit.Server("h", 1999),)
    assert parse_options(host="h2").servers == (mqttkit.Server("h2", 1883),)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"servers": []}, "servers is empty"),
        ({"servers": "mqtt://a"}, "servers must be a list"),
        ({"servers": [("a",)]}, "a server must be a URL"),
        ({"servers": [("a", "1883")]}, "port must be an int"),
        ({"servers": [("a", 70000)]}, "port must be an int"),
        ({"servers": [("", 1883)]}, "host must be a non-empty str"),
        ({"servers": [{"host": "a", "prot": "mqtt"}]}, "unknown key(s) ['prot']"),
        ({"servers": [{"host": "a", "protocol": "http"}]}, "unsupported protocol 'http'"),
        ({"servers": ["mqtt://u:p@a"]}, "give credentials as username/password"),
        ({"servers": ["mqtt://:1883"]}, "names no host"),
        ({"servers": ["http://a"]}, "unsupported URL scheme"),
        ({"host": "a", "servers": [("b", 1)]}, "either as servers=[...] or as one URL"),
        ({"follow_redirects": "yes"}, "follow_redirects must be True or False"),
    ],
)
def test_bad_servers_are_refused_at_once_saying_what_to_fix(kwargs: dict, message: str) -> None:
    with pytest.raises(mqttkit.InvalidOptionError) as info:
        parse_options(**kwargs)
    assert message in str(info.value)


def test_a_url_with_a_host_and_servers_is_refused() -> None:
    with pytest.raises(mqttkit.InvalidOptionError, match="not both"):
        mqttkit.Client(url="mqtt://a", servers=[("b", 1883)])


def test_server_reference_forms() -> None:
    current = mqttkit.Server("h", 8883, "tls")
    assert parse_server_reference("n1:9001  [::1]:9002 n3 mqtt://n4:7", current) == [
        mqttkit.Server("n1", 9001, "tls"),
        mqttkit.Server("::1", 9002, "tls"),
        mqttkit.Server("n3", 8883, "tls"),
        mqttkit.Server("n4", 7, "tcp"),
    ]
    with pytest.raises(mqttkit.InvalidOptionError, match="names no server"):
        parse_server_reference("  :x ", current)


# -- the rotation ------------------------------------------------------------------------------


def test_servers_in_turn_next_at_once_backoff_after_all_failed_in_a_row() -> None:
    rotation = ServerRotation((A, B, C))
    seen, steps = [], []
    for _ in range(7):
        seen.append(rotation.next_target())
        steps.append(rotation.ended(DOWN, lasted=False).next)
    assert seen == [A, B, C, A, B, C, A]
    assert steps == [Next.NEXT, Next.NEXT, Next.BACKOFF, Next.NEXT, Next.NEXT, Next.BACKOFF,
                     Next.NEXT]  # fmt: skip


def test_a_lost_connection_that_lasted_moves_on_to_the_next_server_at_once() -> None:
    rotation = ServerRotation((A, B, C))
    assert rotation.next_target() == A
    assert rotation.ended(DOWN, lasted=False).next is Next.NEXT
    assert rotation.next_target() == B  # connected there, for a while, then lost
    assert rotation.ended(None, lasted=True).next is Next.NEXT  # the count starts over
    assert rotation.next_target() == C
    assert rotation.ended(DOWN, lasted=False).next is Next.NEXT
    assert rotation.next_target() == A
    assert rotation.ended(DOWN, lasted=False).next is Next.BACKOFF  # C, A, B... : all three


def test_one_server_backs_off_after_every_failure_as_before() -> None:
    rotation = ServerRotation((A,))
    for _ in range(3):
        assert rotation.next_target() == A
        assert rotation.ended(DOWN, lasted=False).next is Next.BACKOFF


def test_a_permanent_refusal_stops_only_once_every_server_refused_for_good() -> None:
    rotation = ServerRotation((A, B))
    refused = ConnectRefusedError(5, MQTT_3_1_1)  # not authorized
    assert refused.permanent
    rotation.next_target()
    assert rotation.ended(refused, lasted=False).next is Next.NEXT  # B may accept
    rotation.next_target()
    step = rotation.ended(refused, lasted=False)
    assert step.next is Next.STOP
    assert step.error is refused
    # A transient failure in between starts the permanent count over.
    rotation = ServerRotation((A, B))
    for error in (refused, ConnectTimeoutError("slow", "receiving"), refused):
        rotation.next_target()
        assert rotation.ended(error, lasted=False).next is not Next.STOP


@pytest.mark.parametrize("connack", [True, False], ids=["connack", "disconnect"])
def test_use_another_server_is_followed_once_and_the_list_stays(connack: bool) -> None:
    rotation = ServerRotation((A, B))
    assert rotation.next_target() == A
    step = rotation.ended(redirect(ReasonCode.USE_ANOTHER_SERVER, "10.0.0.9:1999", connack=connack),
                          lasted=not connack)  # fmt: skip
    assert step == type(step)(Next.REDIRECT, None)  # followed: nothing to report
    target = rotation.next_target()
    assert target == mqttkit.Server("10.0.0.9", 1999)
    assert rotation.ended(DOWN, lasted=False).next is Next.NEXT
    assert rotation.servers == [A, B]  # a temporary redirection changes no entry
    assert rotation.next_target() == B


def test_server_moved_replaces_the_entry_for_good() -> None:
    rotation = ServerRotation((A, B))
    rotation.next_target()
    step = rotation.ended(redirect(ReasonCode.SERVER_MOVED, "10.0.0.9"), lasted=False)
    assert step.next is Next.REDIRECT
    moved = mqttkit.Server("10.0.0.9", 1883)
    assert rotation.next_target() == moved
    assert rotation.servers == [moved, B]


def test_a_redirection_loop_is_reported_not_followed() -> None:
    rotation = ServerRotation((A,))
    rotation.next_target()
    assert rotation.ended(redirect(0x9C, "10.0.0.2:1883"), lasted=False).next is Next.REDIRECT
    assert rotation.next_target() == B
    step = rotation.ended(redirect(0x9C, "10.0.0.1:1883"), lasted=False)  # back to A
    assert step.next is Next.BACKOFF
    assert isinstance(step.error, RedirectError)
    assert "redirection loop" in str(step.error)
    assert step.error.server_reference == "10.0.0.1:1883"
    assert step.error.reason_code == 0x9C
    assert isinstance(step.error.refusal, ConnectRefusedError)


def test_redirections_in_a_row_are_bounded() -> None:
    rotation = ServerRotation((A,))
    rotation.next_target()
    for hop in range(MAX_REDIRECTS):
        step = rotation.ended(redirect(0x9C, f"10.1.0.{hop}"), lasted=False)
        assert step.next is Next.REDIRECT
        rotation.next_target()
    step = rotation.ended(redirect(0x9C, "10.2.0.0"), lasted=False)
    assert step.next is Next.BACKOFF
    assert isinstance(step.error, RedirectError)
    assert f"more than {MAX_REDIRECTS} redirections" in str(step.error)


@pytest.mark.parametrize(
    ("reference", "problem"),
    [(None, "without a Server Reference"), ("::::", "names no server")],
)
def test_a_redirection_that_cannot_be_followed_is_reported(reference, problem) -> None:
    rotation = ServerRotation((A, B))
    rotation.next_target()
    step = rotation.ended(redirect(0x9D, reference), lasted=False)
    assert step.next is Next.NEXT
    assert isinstance(step.error, RedirectError)
    assert problem in str(step.error)


def test_follow_redirects_off_reports_the_refusal_itself() -> None:
    rotation = ServerRotation((A, B), follow_redirects=False)
    rotation.next_target()
    refusal = redirect(0x9C, "10.0.0.9")
    step = rotation.ended(refusal, lasted=False)
    assert step.next is Next.NEXT
    assert step.error is refusal
    assert "server reference '10.0.0.9'" in str(refusal)
