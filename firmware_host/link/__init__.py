"""The serial link between a host and a device, one module per job:

- ``protocol``: bytes <-> messages (SLIP frames, CRC-32, message bodies); no I/O. PROTOCOL.md;
- ``transport``: where bytes go: a pyserial port (imported lazily) and an in-memory loopback;
  every port failure is a ``PortError``;
- ``session``: the host's stream conversation as a state machine, no I/O; ``push``: its model push;
- ``host``: the one driver loop that runs a session over a transport and reopens a vanished port;
- ``agent``: the device's side, a state machine plus its serve loop.
"""
