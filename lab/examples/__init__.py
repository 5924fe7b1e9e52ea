"""The lab's example topology, wherever Ferryman runs from: a checkout or an installed wheel."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
# a checkout: the file as edited; an installed wheel: the copy its build put beside this module
CHECKOUT_TOPOLOGY = HERE.parent.parent / "deploy" / "lab" / "topology.yaml"
PACKAGED_TOPOLOGY = HERE / "topology.yaml"


def topology_path() -> Path:
    """The example topology file (two sites with VMM, the example fabric's hosts and VMs)."""
    if PACKAGED_TOPOLOGY.is_file():
        return PACKAGED_TOPOLOGY
    return CHECKOUT_TOPOLOGY
