"""The lab's Windows domain: Hyper-V Replica hosts, VMM servers and Windows DNS.

- ``state``: the world (VM records on hosts, replication relationships shared by both ends)
  and its time-driven progress; ``enums``: the real enumerations;
- ``params``: PowerShell-style parameter binding; ``context``: what a handler gets;
  ``errors``: error records with real FullyQualifiedErrorIds; ``shapes``: output objects;
- ``cmdlets`` (VMs, adapters, recovery points), ``replication`` (Get/Measure/Enable,
  initial replication), ``failover`` (Start/Stop/Complete-VMFailover), ``relationship``
  (Set/Remove/Suspend/Resume-VMReplication, resynchronisation), ``replicaserver`` (the
  Replica server's configuration and authorization entries, Remove-VM), ``vmm``, ``dns``,
  ``scripts`` (operators' scripts, acted out by the topology's behaviours) and
  ``hostscripts`` (fixed scripts a client sends with parameters, run as a host runs them:
  the host-side wait for a guest's address);
- ``registry``: every command by name.

Nothing here touches the network.
"""
