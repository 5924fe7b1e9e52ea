"""The lab's example topology, wherever Ferryman runs from: a checkout or an installed wheel."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
# the one copy: package data of the wheel, and what deploy/lab/topology.yaml links to in a checkout
TOPOLOGY = HERE / "topology.yaml"


def topology_path() -> Path:
    """The example topology file (two sites with VMM, the example fabric's hosts and VMs)."""
    return TOPOLOGY
