"""Error records shaped like the ones real PowerShell, Hyper-V, VMM and DNS cmdlets write.

Each builder returns an :class:`~lab.objects.ErrorInfo`; the same situation always yields the
same FullyQualifiedErrorId, so clients can classify errors by id.
"""

from __future__ import annotations

from typing import Any

from lab.objects import ErrorInfo, LabObject

HYPERV_EXCEPTION = "Microsoft.HyperV.PowerShell.VirtualizationException"
BINDING_EXCEPTION = "System.Management.Automation.ParameterBindingException"

# The cmdlet class behind each Hyper-V cmdlet name, for "<Id>,<class>" error ids.
_HYPERV_CLASS = "Microsoft.HyperV.PowerShell.Commands."


def cmdlet_class(cmdlet: str) -> str:
    """The .NET class PowerShell names in error ids: Start-VMFailover -> ...StartVMFailover."""
    noun = cmdlet.partition("-")[2]
    if noun.startswith("SC"):
        return "Microsoft.SystemCenter.VirtualMachineManager.Cmdlets." + cmdlet.replace("-", "")
    if noun.startswith("DnsServer"):
        # The DnsServer module's CIM cmdlets name themselves in their error ids.
        return cmdlet
    return _HYPERV_CLASS + cmdlet.replace("-", "")


def command_not_found(name: str) -> ErrorInfo:
    """PowerShell's answer to a command name it does not know."""
    return ErrorInfo(
        message=(
            f"The term '{name}' is not recognized as the name of a cmdlet, function, script "
            "file, or operable program. Check the spelling of the name, or if a path was "
            "included, verify that the path is correct and try again."
        ),
        fully_qualified_error_id="CommandNotFoundException",
        category="ObjectNotFound",
        target_object=name,
        exception_type="System.Management.Automation.CommandNotFoundException",
    )


def scripts_not_allowed() -> ErrorInfo:
    """A runspace in no-language mode (a JEA endpoint's default) given script text."""
    return ErrorInfo(
        message=(
            "The syntax is not supported by this runspace. This can occur if the runspace is "
            "in no-language mode."
        ),
        fully_qualified_error_id="ScriptsNotAllowed",
        category="ParserError",
        target_object=None,
        exception_type="System.Management.Automation.ParseException",
    )


def parameter_not_found(cmdlet: str, parameter: str) -> ErrorInfo:
    """A named parameter the cmdlet does not have."""
    return ErrorInfo(
        message=f"A parameter cannot be found that matches parameter name '{parameter}'.",
        fully_qualified_error_id=f"NamedParameterNotFound,{cmdlet_class(cmdlet)}",
        category="InvalidArgument",
        target_object=None,
        exception_type=BINDING_EXCEPTION,
    )


def positional_not_found(cmdlet: str, value: Any) -> ErrorInfo:
    """A positional argument with nowhere to go."""
    return ErrorInfo(
        message=f"A positional parameter cannot be found that accepts argument '{value}'.",
        fully_qualified_error_id=f"PositionalParameterNotFound,{cmdlet_class(cmdlet)}",
        category="InvalidArgument",
        exception_type=BINDING_EXCEPTION,
    )


def missing_mandatory(cmdlet: str, names: list[str]) -> ErrorInfo:
    """Mandatory parameters absent (a remote session cannot prompt for them)."""
    return ErrorInfo(
        message=(
            "Cannot process command because of one or more missing mandatory parameters: "
            + " ".join(names)
            + "."
        ),
        fully_qualified_error_id=f"MissingMandatoryParameter,{cmdlet_class(cmdlet)}",
        category="InvalidArgument",
        exception_type=BINDING_EXCEPTION,
    )


def ambiguous_set(cmdlet: str) -> ErrorInfo:
    """Parameters that belong to no single parameter set (e.g. -AsTest with -Prepare)."""
    return ErrorInfo(
        message="Parameter set cannot be resolved using the specified named parameters.",
        fully_qualified_error_id=f"AmbiguousParameterSet,{cmdlet_class(cmdlet)}",
        category="InvalidArgument",
        exception_type=BINDING_EXCEPTION,
    )


def bad_argument(cmdlet: str, parameter: str, message: str, value: Any = None) -> ErrorInfo:
    """A parameter value that fails validation (wrong type, outside its range)."""
    return ErrorInfo(
        message=f"Cannot validate argument on parameter '{parameter}'. {message}",
        fully_qualified_error_id=f"ParameterArgumentValidationError,{cmdlet_class(cmdlet)}",
        category="InvalidData",
        target_object=value,
        exception_type=BINDING_EXCEPTION,
    )


def vm_not_found(cmdlet: str, name: str) -> ErrorInfo:
    """Hyper-V's error for a VM name that the host does not have."""
    return ErrorInfo(
        message=f'Hyper-V was unable to find a virtual machine with name "{name}".',
        fully_qualified_error_id=f"InvalidParameter,{cmdlet_class(cmdlet)}",
        category="InvalidArgument",
        target_object=name,
    )


def switch_not_found(cmdlet: str, name: str) -> ErrorInfo:
    """Hyper-V's error for a virtual switch the host does not have."""
    return ErrorInfo(
        message=f'Hyper-V was unable to find a virtual switch with name "{name}".',
        fully_qualified_error_id=f"InvalidParameter,{cmdlet_class(cmdlet)}",
        category="InvalidArgument",
        target_object=name,
    )


def invalid_state(cmdlet: str, vm_name: str, message: str, target: Any = None) -> ErrorInfo:
    """An operation the VM's current (replication) state does not allow."""
    return ErrorInfo(
        message=f"'{vm_name}' {message}",
        fully_qualified_error_id=f"InvalidState,{cmdlet_class(cmdlet)}",
        category="InvalidOperation",
        target_object=target if target is not None else vm_name,
    )


def replication_not_enabled(cmdlet: str, vm_name: str) -> ErrorInfo:
    """Hyper-V's error for replication cmdlets on a VM that does not replicate."""
    return ErrorInfo(
        message=f"Replication is not enabled for virtual machine '{vm_name}'.",
        fully_qualified_error_id=f"ObjectNotFound,{cmdlet_class(cmdlet)}",
        category="ObjectNotFound",
        target_object=vm_name,
    )


def operation_failed(cmdlet: str, message: str, target: Any = None) -> ErrorInfo:
    """A Hyper-V operation that failed for a reason other than state (e.g. unreachable)."""
    return ErrorInfo(
        message=message,
        fully_qualified_error_id=f"OperationFailed,{cmdlet_class(cmdlet)}",
        category="NotSpecified",
        target_object=target,
    )


def injected(cmdlet: str, error_id: str | None, message: str | None) -> ErrorInfo:
    """A permanent error injected by a fault rule."""
    return ErrorInfo(
        message=message or f"Injected failure of {cmdlet}.",
        fully_qualified_error_id=error_id or f"OperationFailed,{cmdlet_class(cmdlet)}",
        category="NotSpecified",
    )


def dns_error(cmdlet: str, code: int, message: str, target: Any = None) -> ErrorInfo:
    """A Windows DNS cmdlet error (``WIN32 9714,Get-DnsServerResourceRecord`` style)."""
    return ErrorInfo(
        message=message,
        fully_qualified_error_id=f"WIN32 {code},{cmdlet}",
        category="ObjectNotFound"
        if code in (9601, 9714)
        else "ResourceExists"
        if code == 9711
        else "InvalidArgument",
        target_object=target,
        exception_type="Microsoft.Management.Infrastructure.CimException",
    )


TRANSFORMATION_EXCEPTION = (
    "System.Management.Automation.ParameterBindingArgumentTransformationException"
)


def cannot_convert(cmdlet: str, parameter: str, conversion: str, value: Any = None) -> ErrorInfo:
    """A parameter value PowerShell cannot convert to the parameter's type.

    ``conversion`` is the cast's own message (see :func:`conversion_message`). Compiled
    cmdlets (Hyper-V, VMM) answer ``CannotConvertArgumentNoMessage``; the DnsServer module's
    cmdlets are CDXML functions, whose typed parameters fail in an argument transformation.
    """
    if cmdlet_class(cmdlet) == cmdlet:
        return ErrorInfo(
            message=f"Cannot process argument transformation on parameter '{parameter}'. "
            + conversion,
            fully_qualified_error_id=f"ParameterArgumentTransformationError,{cmdlet}",
            category="InvalidData",
            target_object=value,
            exception_type=TRANSFORMATION_EXCEPTION,
        )
    return ErrorInfo(
        message=f"Cannot bind parameter '{parameter}'. {conversion}",
        fully_qualified_error_id=f"CannotConvertArgumentNoMessage,{cmdlet_class(cmdlet)}",
        category="InvalidArgument",
        target_object=value,
        exception_type=BINDING_EXCEPTION,
    )


def conversion_message(value: Any, type_name: str, reason: str | None = None) -> str:
    """.NET's message for a failed cast of ``value`` to ``type_name``.

    With ``reason`` (the parser's own error) it reads like a failed ``TimeSpan.Parse``;
    without, like a cast between unrelated types (a hashtable or a string to a VMSnapshot).
    """
    if reason is not None:
        return f'Cannot convert value "{value}" to type "{type_name}". Error: "{reason}"'
    shown, source = _dotnet_view(value)
    return f'Cannot convert the "{shown}" value of type "{source}" to type "{type_name}".'


def _dotnet_view(value: Any) -> tuple[str, str]:
    """How PowerShell prints a value and names its type in a cast error."""
    if isinstance(value, dict):
        if {"SnapshotType", "VMName"} <= set(value):
            # Get-VMSnapshot output sent back by a client: its deserialised copy.
            return str(value.get("Name")), "Deserialized.Microsoft.HyperV.PowerShell.VMSnapshot"
        if {"MacAddress", "SwitchName"} <= set(value):
            # Get-VMNetworkAdapter output sent back by a client: its deserialised copy.
            name, vm = value.get("Name"), value.get("VMName")
            shown = f"VMNetworkAdapter (Name = '{name}', VMName = '{vm}')"
            return shown, "Deserialized.Microsoft.HyperV.PowerShell.VMNetworkAdapter"
        return "System.Collections.Hashtable", "System.Collections.Hashtable"
    if isinstance(value, bool):
        return str(value), "System.Boolean"
    if isinstance(value, int):
        return str(value), "System.Int32"
    if isinstance(value, str):
        return value, "System.String"
    if isinstance(value, list | tuple):
        return "System.Object[]", "System.Object[]"
    if isinstance(value, LabObject):
        return value.to_string or value.type_names[0], value.type_names[0]
    return str(value), "System.Object"
