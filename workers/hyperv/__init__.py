"""The Hyper-V / VMM adapter: PowerShell Remoting over pypsrp, typed cmdlets, IP retrieval.

``connection`` (where a host is) → ``pool`` (a bounded set of sessions per host, each
leased to one call at a time) → ``psrp`` (the PowerShellRunner over pypsrp, error
classification in ``faults``, output flattening in ``objects``) → ``hyperv`` / ``vmm``
(typed cmdlets returning ``models``, statuses in ``states``) → ``ip`` (waiting for a
failed-over VM's address).
"""
