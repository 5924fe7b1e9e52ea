"""Build hook: the wheel carries the lab's example topology inside the ``lab`` package.

``deploy/lab/topology.yaml`` is where the topology lives and is edited; a checkout reads it
there. An installed Ferryman has no ``deploy/`` folder, so the build copies the file to
``lab/examples/topology.yaml``, where :func:`lab.examples.topology_path` finds it.
Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SHIPPED = {"lab/examples/topology.yaml": HERE / "deploy" / "lab" / "topology.yaml"}


class BuildWithExamples(build_py):
    """``build_py`` plus the files of :data:`SHIPPED`, copied into the built packages."""

    def run(self) -> None:
        super().run()
        for target, source in SHIPPED.items():
            destination = Path(self.build_lib) / target
            self.mkpath(str(destination.parent))
            self.copy_file(str(source), str(destination))


setup(cmdclass={"build_py": BuildWithExamples})
