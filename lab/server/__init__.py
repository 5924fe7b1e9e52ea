"""The lab's network face: WS-Management + PSRP endpoints per host, and the admin JSON API.

``lab.server`` turns a :class:`lab.server.backend.LabBackend` (the Hyper-V/VMM domain, which
has no network code) into listening WinRM endpoints that the real pypsrp client talks to:

- ``http``: threaded keep-alive HTTP/1.1 on 127.0.0.1, Content-Length on every reply;
- ``auth``: Basic, and NTLM with WinRM message encryption (pyspnego acceptor);
- ``certificate``: a throw-away CA + server certificate for ``--auth https``;
- ``wsman``: SOAP envelopes, faults (TimedOut 2150858793 after OperationTimeout);
- ``psrp``: one psrpcore ServerRunspacePool per shell, per-target output queues;
- ``serialize``: lab objects as a Windows host serialises cmdlet output;
- ``endpoint``: one host's listener (absent while the host is down: connection refused);
- ``admin``: the admin API, answered by the domain's ``admin(method, path, body)``;
- ``service``: :class:`~lab.server.service.LabServer`, all of the above for every host;
- ``domain``: the bridge from ``lab.world.Lab`` to the backend protocol.

Most callers want :func:`lab.testing.running_lab` or ``ferryman lab serve``.
"""
