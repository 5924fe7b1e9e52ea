"""The lab's network face: WS-Management + PSRP endpoints per host, and the admin JSON API.

``lab.server`` turns a :class:`lab.server.backend.LabBackend` (the Hyper-V/VMM domain, which
has no network code) into listening WinRM endpoints that the real pypsrp client talks to.
"""
