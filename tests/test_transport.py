"""Transports and the loops that do the I/O: the pyserial port on a real pseudo-terminal, the
in-memory loopback, the host driver reopening a vanished port, and the agent's serve loop
surviving port errors only. Threads and ptys, no model: each test takes well under a second."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import fake_device as fake
from fault_relay import Relay
from firmware_host.errors import LinkError
from firmware_host.link import protocol as p
from firmware_host.link.agent import DeviceAgent, serve
from firmware_host.link.host import Driver, stream
from firmware_host.link.session import StreamSession
from firmware_host.link.transport import PortError, SerialTransport, loopback_pair
from threads import Background


def test_the_serial_transport_on_a_pty_reads_writes_and_reports_a_vanished_port(tmp_path):
    with Relay(host_link=tmp_path / "ttyUSB0") as relay:
        host, device = SerialTransport(relay.host_port), SerialTransport(relay.device_port)
        host.write(b"\xc0abc")
        assert device.read(100, 1.0) == b"\xc0abc" and device.read(100, 0.05) == b""
        relay.unplug()
        with pytest.raises(PortError, match="ttyUSB0: read failed .*pulled"):
            host.read(100, 0.5)
        with pytest.raises(PortError, match="ttyUSB0: write failed"):
            host.write(b"x")
        with pytest.raises(PortError, match="cannot open the serial port \\(No such file or directory\\).*by-id"):
            host.reopen()
        relay.replug()
        host.reopen()
        device.write(b"back")
        assert host.read(100, 1.0) == b"back"
        host.close()
        host.close()                               # closing twice, or a vanished port, never raises
        device.close()
    with pytest.raises(PortError, match="cannot open the serial port"):
        SerialTransport(str(tmp_path / "nothing-here"))
    assert issubclass(PortError, LinkError)


def test_the_loopback_is_a_line_that_can_be_unplugged():
    host, device = loopback_pair()
    host.write(b"hello")
    assert device.read(3, 0.1) == b"hel" and device.read(100, 0.1) == b"lo" and device.read(9, 0.01) == b""
    host.unplug()
    with pytest.raises(PortError):
        host.read(1, 0.01)
    with pytest.raises(PortError):
        host.reopen()
    device.write(b"lost")                          # nobody is there to receive it
    host.plug()
    host.reopen()
    assert host.read(100, 0.01) == b""
    device.write(b"ok")
    assert host.read(100, 0.1) == b"ok"


@pytest.fixture
def served_fake():
    """A real DeviceAgent state machine (fake model) serving the device end of a loopback in a thread."""
    host, device = loopback_pair()
    manifest = fake.manifest(window=4)
    agent = DeviceAgent("unused", open_detector=fake.opener(manifest))
    stop = threading.Event()
    thread = Background(lambda: serve(device, agent, stop=stop.is_set, reopen_every=0.05))
    yield host, manifest, agent
    stop.set()
    thread.result()


def _stream(host, manifest, inputs, give_up_after=5.0, first_seq=0):
    delivered = []
    session = StreamSession(manifest, lambda first, v: delivered.append((first, v)), first_seq=first_seq,
                            give_up_after=give_up_after)
    stats = stream(Driver(host, give_up_after=give_up_after), session, np.array_split(inputs, 20))
    return delivered, stats


def test_the_driver_reopens_a_vanished_port_with_backoff_and_the_stream_goes_on(served_fake):
    host, manifest, agent = served_fake
    inputs = fake.samples(3000, seed=11)

    def unplug_for_a_while():
        while agent.samples < 500:
            threading.Event().wait(0.001)
        host.unplug()
        threading.Event().wait(0.4)
        host.plug()

    pull = Background(unplug_for_a_while)
    delivered, stats = _stream(host, manifest, inputs, first_seq=2**32 - 1000)
    pull.result()
    fake.assert_same(fake.joined(delivered), fake.reference(manifest, inputs))
    assert stats.reconnects == 1 and stats.samples == 3000 and agent.samples == 3000


def test_the_driver_gives_up_when_the_port_stays_away(served_fake):
    host, manifest, agent = served_fake
    inputs = fake.samples(100_000, seed=12)

    def unplug_for_good():
        while agent.samples < 500:
            threading.Event().wait(0.001)
        host.unplug()

    pull = Background(unplug_for_good)
    with pytest.raises(LinkError, match="host vanished and was not back within 0.5 s; giving up"):
        _stream(host, manifest, inputs, give_up_after=0.5)
    pull.result()


def _caps(host) -> bool:
    """HELLO until the agent answers with CAPS (as a host does); False after 5 s."""
    decoder = p.Decoder()
    for _ in range(50):
        host.write(p.encode(p.hello()))
        if any(frame.type == p.CAPS for frame in decoder.feed(host.read(4096, 0.1))):
            return True
    return False


def test_the_agent_survives_port_errors_but_not_a_bug_in_its_handler():
    host, device = loopback_pair()
    agent = DeviceAgent("unused", open_detector=fake.opener(fake.manifest()))
    said = []
    stop = threading.Event()
    serving = Background(lambda: serve(device, agent, log=said.append, stop=stop.is_set, reopen_every=0.05))
    assert _caps(host)
    device.unplug()                                # the device's own port vanishes, then comes back
    threading.Event().wait(0.2)
    device.plug()
    assert _caps(host)
    assert sum("port lost" in s for s in said) == 1 and sum("listening on" in s for s in said) == 2

    def broken(frame):
        raise ZeroDivisionError("a bug in the handler")

    agent.handle = broken
    host.write(p.encode(p.hello()))
    with pytest.raises(ZeroDivisionError, match="a bug in the handler"):
        serving.result()
    assert sum("port lost" in s for s in said) == 1     # the bug was not taken for a lost port
