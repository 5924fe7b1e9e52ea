"""What a cmdlet handler gets: the world, its host, bound parameters, pipeline input.

A handler returns its output objects. Per-operand failures go through :meth:`Context.fail`,
which acts on ``-ErrorAction``: by default a Hyper-V operand error is *non-terminating* (an
error record, the pipeline goes on), as on a real host; ``-ErrorAction Stop`` makes it
terminating (:class:`~lab.objects.CmdletError`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lab.hyperv import errors, wildcard
from lab.hyperv.params import Bound, Signature
from lab.hyperv.state import VM, HyperVWorld
from lab.objects import CmdletError, ErrorInfo, LabObject

# Hyper-V properties that identify a VM in objects sent back by clients or piped in.
_ID_KEYS = ("VMId", "Id")
_NAME_KEYS = ("VMName", "Name")


@dataclass(frozen=True)
class Touch:
    """One operand a mutating cmdlet acted on, for the audit log."""

    vm: str | None
    outcome: str
    changed: bool


@dataclass
class Context:
    """The call being answered."""

    world: HyperVWorld
    host: str
    cmdlet: str
    bound: Bound
    input: list[Any]
    warnings: list[str] = field(default_factory=list)
    errors: list[ErrorInfo] = field(default_factory=list)
    touched: list[Touch] = field(default_factory=list)

    def fail(self, info: ErrorInfo, vm: str | None = None) -> None:
        """Report a per-operand error (non-terminating unless ``-ErrorAction Stop``)."""
        self.touched.append(Touch(vm, "error:" + info.fully_qualified_error_id, False))
        action = self.bound.error_action.lower()
        if action == "stop":
            raise CmdletError(info)
        if action not in ("silentlycontinue", "ignore"):
            self.errors.append(info)

    def done(self, vm: str, *, changed: bool = True) -> None:
        """Record that the operand ``vm`` succeeded (``changed`` False: already there)."""
        self.touched.append(Touch(vm, "ok", changed))

    def warn(self, message: str) -> None:
        """Write a warning record."""
        self.warnings.append(message)

    # ----------------------------------------------------------------- operands
    def vms(self, *, name_params: Iterable[str] = ("VMName", "Name")) -> list[VM]:
        """The VMs this call names: by name (wildcards), by VM object, or piped in.

        Unknown names produce Hyper-V's "unable to find a virtual machine" error. With no
        name at all, every VM on the host (what ``Get-VM`` does).
        """
        world, host = self.world, self.host
        names: list[str] = []
        for p in name_params:
            names.extend(self.bound.strings(p))
        objects = list(self._objects("VM")) + list(self.input)
        found: list[VM] = []
        for obj in objects:
            vm = self.vm_from_object(obj)
            if vm is None:
                self.fail(errors.vm_not_found(self.cmdlet, _label(obj)), _label(obj))
            elif vm not in found:
                found.append(vm)
        for name in names:
            if wildcard.has_wildcards(name):
                matches = [
                    vm for vm in world.vms.get(host, {}).values() if wildcard.matches(name, vm.name)
                ]
            else:
                name = wildcard.unescape(name)
                one = world.find(host, name)
                matches = [one] if one else []
                if not matches:
                    self.fail(errors.vm_not_found(self.cmdlet, name), name)
            found.extend(vm for vm in matches if vm not in found)
        if not names and not objects:
            found = list(world.vms.get(host, {}).values())
        return found

    def vm_from_object(self, obj: Any) -> VM | None:
        """The VM on this host that a client or pipeline object stands for."""
        if isinstance(obj, str):
            return self.world.find(self.host, obj)
        for key in _ID_KEYS:
            value = prop(obj, key)
            if value is not None:
                vm = self.world.find_by_id(self.host, str(value))
                if vm is not None:
                    return vm
        for key in _NAME_KEYS:
            value = prop(obj, key)
            if isinstance(value, str):
                return self.world.find(self.host, value)
        return None

    def _objects(self, name: str) -> list[Any]:
        value = self.bound.get(name)
        if value is None:
            return []
        return list(value) if isinstance(value, list | tuple) else [value]


Handler = Callable[[Context], list[Any]]


@dataclass(frozen=True)
class Cmdlet:
    """A cmdlet the lab answers: its signature, its handler, where it runs, if it mutates."""

    signature: Signature
    handler: Handler
    role: str = "hyperv"
    mutating: bool = False


def prop(obj: Any, name: str) -> Any:
    """Read property ``name`` of a lab object, a dict, or a deserialised PowerShell object."""
    if isinstance(obj, LabObject):
        return _ci_get(obj.properties, name)
    if isinstance(obj, dict):
        return _ci_get(obj, name)
    ps = getattr(obj, "PSObject", None)
    if ps is not None:
        for attr in ("adapted_properties", "extended_properties"):
            for p in getattr(ps, attr, []) or []:
                if str(p.name).lower() == name.lower():
                    return p.get_value(obj)
    return getattr(obj, name, None)


def _ci_get(mapping: dict[str, Any], name: str) -> Any:
    if name in mapping:
        return mapping[name]
    lowered = name.lower()
    for key, value in mapping.items():
        if str(key).lower() == lowered:
            return value
    return None


def _label(obj: Any) -> str:
    for key in (*_NAME_KEYS, *_ID_KEYS):
        value = prop(obj, key)
        if value is not None:
            return str(value)
    return str(obj)
