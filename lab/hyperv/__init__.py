"""The lab's Windows domain: Hyper-V Replica hosts, VMM servers and Windows DNS.

``state`` holds the world (VMs, replication relationships, DNS zones) and its transitions;
``cmdlets``, ``replication``, ``vmm``, ``dns`` and ``scripts`` answer commands against it.
Nothing here touches the network.
"""
