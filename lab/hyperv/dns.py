"""Windows DNS cmdlets on the VMM hosts: Get/Add/Set/Remove of resource records.

Records come back one object per value, shaped like the DnsServer module's CIM instances;
``Set-DnsServerResourceRecord`` takes the old and a modified clone and, like the real cmdlet,
refuses to change a record's name or type. Its two parameters are CimInstances: only record
objects of the server itself bind (``$old.Clone()`` in a script on the server); a hashtable or a
client's deserialised copy fails the argument transformation, as on Windows. A zone listed
with several servers is shared by them (AD-integrated).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from lab.hyperv import errors
from lab.hyperv.context import Cmdlet, Context, prop
from lab.hyperv.params import Param, Signature, pset
from lab.hyperv.timespan import TimeSpanError, parse_timespan, whole_seconds
from lab.objects import CmdletError, ErrorInfo, LabObject
from lab.topology import Topology

_CIM = "Microsoft.Management.Infrastructure.CimInstance"
_RR = "#root/Microsoft/Windows/DNS/DnsServerResourceRecord"
_RR_TYPES = [_CIM + _RR, _CIM + "#DnsServerResourceRecord", _CIM]
_TYPE_CODES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28}
_DATA_KEYS = {
    "A": "IPv4Address",
    "AAAA": "IPv6Address",
    "CNAME": "HostNameAlias",
    "PTR": "PtrDomainName",
    "TXT": "DescriptiveText",
    "NS": "NameServer",
}


@dataclass
class Record:
    """One value of one name and type."""

    name: str
    type: str
    data: str
    ttl: int = 3600


@dataclass
class Zone:
    """A zone and its records (guarded by the world lock, like everything else)."""

    name: str
    servers: tuple[str, ...]
    records: list[Record] = field(default_factory=list)


def build_zones(topology: Topology) -> dict[str, Zone]:
    """The zones of ``topology`` keyed by lower-case name."""
    zones = {}
    for spec in topology.zones:
        zone = Zone(spec.name, spec.servers)
        for rec in spec.records:
            zone.records.extend(Record(rec.name, rec.type, value, rec.ttl) for value in rec.data)
        zones[spec.name.lower()] = zone
    return zones


def record_object(zone: Zone, rec: Record) -> LabObject:
    """A record as ``Get-DnsServerResourceRecord`` returns it."""
    key = _DATA_KEYS.get(rec.type, "Data")
    data = LabObject(
        type_names=[_CIM + _RR + rec.type, _CIM + "#DnsServerResourceRecord" + rec.type, _CIM],
        properties={key: rec.data},
        to_string=rec.data,
    )
    return LabObject(
        type_names=list(_RR_TYPES),
        properties={
            "DistinguishedName": f"DC={rec.name},DC={zone.name},cn=MicrosoftDNS,"
            "DC=DomainDnsZones,DC=lab,DC=local",
            "HostName": rec.name,
            "RecordClass": "IN",
            "RecordData": data,
            "RecordType": rec.type,
            "Timestamp": None,
            "TimeToLive": timedelta(seconds=rec.ttl),
            "Type": _TYPE_CODES.get(rec.type, 0),
        },
        to_string=f"DnsServerResourceRecord (HostName = '{rec.name}', RecordType = '{rec.type}')",
    )


def _zone(ctx: Context) -> Zone | None:
    name = str(ctx.bound.get("ZoneName", "")).rstrip(".").lower()
    # No lock of its own: the world lock is held around every handler.
    zone: Zone | None = ctx.world.zones.get(name)
    if zone is None or ctx.host not in zone.servers:
        ctx.fail(
            errors.dns_error(
                ctx.cmdlet,
                9601,
                f"The zone {name} was not found on server {ctx.host.upper()}.",
                name,
            )
        )
        return None
    return zone


def _relative(zone: Zone, name: str) -> str:
    """Record names relative to the zone: FQDNs and a trailing dot are accepted."""
    name = name.rstrip(".")
    suffix = "." + zone.name.lower()
    if name.lower().endswith(suffix):
        name = name[: -len(suffix)]
    elif name.lower() == zone.name.lower():
        name = "@"
    return name


def _matching(zone: Zone, name: str | None, rtype: str | None) -> list[Record]:
    return [
        r
        for r in zone.records
        if (name is None or r.name.lower() == name.lower())
        and (rtype is None or r.type == rtype.upper())
    ]


def _not_found(ctx: Context, zone: Zone, name: str) -> ErrorInfo:
    return errors.dns_error(
        ctx.cmdlet,
        9714,
        f"Failed to get {name} record in {zone.name} zone on {ctx.host.upper()} server.",
        name,
    )


def get_records(ctx: Context) -> list[Any]:
    """Get-DnsServerResourceRecord -ZoneName [-Name] [-RRType]."""
    zone = _zone(ctx)
    if zone is None:
        return []
    name = ctx.bound.get("Name")
    rel = None if name is None else _relative(zone, str(name))
    found = _matching(zone, rel, ctx.bound.get("RRType"))
    if rel is not None and not found:
        ctx.fail(_not_found(ctx, zone, str(name)))
    return [record_object(zone, r) for r in found]


def ttl_seconds(ctx: Context, span: timedelta, target: str) -> int | None:
    """A bound TimeToLive as whole seconds; a negative one is refused (None)."""
    seconds = whole_seconds(span)
    if seconds < 0:
        ctx.fail(
            errors.dns_error(
                ctx.cmdlet,
                87,
                f"TimeToLive {span} is negative: give a TimeSpan of zero or more (e.g. 00:05:00).",
                target,
            ),
            target,
        )
        return None
    return seconds


def _record_data(ctx: Context, zone: Zone, rtype: str, value: str, name: str) -> str | None:
    """A record's data as the server stores it (addresses canonical, PTR targets absolute)."""
    if rtype == "PTR":
        return value if value.endswith(".") else value + "."
    if rtype not in ("A", "AAAA"):
        return value
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        conversion = errors.conversion_message(
            value, "System.Net.IPAddress", "An invalid IP address was specified."
        )
        info = errors.cannot_convert(ctx.cmdlet, _DATA_KEYS[rtype], conversion, value)
        raise CmdletError(info) from None
    if address.version != (4 if rtype == "A" else 6):
        ctx.fail(
            errors.dns_error(
                ctx.cmdlet,
                87,
                f"Failed to create resource record {name} in {zone.name} zone on server "
                f"{ctx.host.upper()}: {value} is not an IPv{4 if rtype == 'A' else 6} address.",
                name,
            ),
            name,
        )
        return None
    return str(address)


def _add(ctx: Context, rtype: str) -> list[Any]:
    """Add-DnsServerResourceRecordA/AAAA/Ptr: one record per value given."""
    zone = _zone(ctx)
    if zone is None:
        return []
    name = _relative(zone, str(ctx.bound.get("Name")))
    ttl: int | None = 3600
    if ctx.bound.has("TimeToLive"):
        ttl = ttl_seconds(ctx, ctx.bound.get("TimeToLive"), name)
    if ttl is None:
        return []
    out = []
    for given in ctx.bound.strings(_DATA_KEYS[rtype]):
        value = _record_data(ctx, zone, rtype, given, name)
        if value is None:
            continue
        if any(r.data == value for r in _matching(zone, name, rtype)):
            ctx.fail(
                errors.dns_error(
                    ctx.cmdlet,
                    9711,
                    f"Failed to create resource record {name} in {zone.name} zone on server "
                    f"{ctx.host.upper()}: the record already exists.",
                    name,
                ),
                name,
            )
            continue
        rec = Record(name, rtype, value, ttl)
        zone.records.append(rec)
        ctx.done(name)
        if ctx.bound.switch("PassThru"):
            out.append(record_object(zone, rec))
    return out


def add_a(ctx: Context) -> list[Any]:
    """Add-DnsServerResourceRecordA -ZoneName -Name -IPv4Address [-TimeToLive]."""
    return _add(ctx, "A")


def add_aaaa(ctx: Context) -> list[Any]:
    """Add-DnsServerResourceRecordAAAA -ZoneName -Name -IPv6Address [-TimeToLive]."""
    return _add(ctx, "AAAA")


def add_ptr(ctx: Context) -> list[Any]:
    """Add-DnsServerResourceRecordPtr -ZoneName -Name -PtrDomainName [-TimeToLive]."""
    return _add(ctx, "PTR")


def _canonical(rtype: str, value: str) -> str:
    """Record data in the stored form, for matching what a client names."""
    if rtype in ("A", "AAAA"):
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            return value
    if rtype == "PTR" and not value.endswith("."):
        return value + "."
    return value


def _data_of(
    ctx: Context, param: str, obj: Any = None
) -> tuple[str, str, str | None, timedelta | None]:
    """(HostName, RecordType, value, TimeToLive) of a record object sent by a client: the
    bound parameter ``param``'s value, or ``obj`` (one of them, e.g. piped in)."""
    if obj is None:
        obj = ctx.bound.get(param)
    rtype = str(prop(obj, "RecordType") or "A").upper()
    data = prop(obj, "RecordData")
    value = prop(data, _DATA_KEYS.get(rtype, "Data")) if data is not None else None
    if value is None and isinstance(data, str):
        value = data
    raw_ttl = prop(obj, "TimeToLive")
    ttl: timedelta | None = None
    if raw_ttl is not None:
        try:
            ttl = parse_timespan(raw_ttl)
        except TimeSpanError as exc:
            conversion = errors.conversion_message(raw_ttl, "System.TimeSpan", str(exc))
            info = errors.cannot_convert(ctx.cmdlet, param, conversion, raw_ttl)
            raise CmdletError(info) from None
    return (
        str(prop(obj, "HostName") or ""),
        rtype,
        None if value is None else str(value),
        ttl,
    )


def set_record(ctx: Context) -> list[Any]:
    """Set-DnsServerResourceRecord -OldInputObject -NewInputObject -ZoneName."""
    zone = _zone(ctx)
    if zone is None:
        return []
    old_name, old_type, old_value, _ = _data_of(ctx, "OldInputObject")
    new_name, new_type, new_value, new_span = _data_of(ctx, "NewInputObject")
    if old_name.lower() != new_name.lower() or old_type != new_type:
        ctx.fail(
            errors.dns_error(
                ctx.cmdlet,
                87,
                "Resource record name and type of the new input object must match the old "
                "one: remove the record and add a new one instead.",
                new_name,
            ),
            old_name,
        )
        return []
    new_ttl = None if new_span is None else ttl_seconds(ctx, new_span, old_name)
    if new_span is not None and new_ttl is None:
        return []
    if new_value is not None:
        new_value = _record_data(ctx, zone, new_type, new_value, old_name)
        if new_value is None:
            return []
    old_value = None if old_value is None else _canonical(old_type, old_value)
    rel = _relative(zone, old_name)
    target = next((r for r in _matching(zone, rel, old_type) if r.data == old_value), None)
    if target is None:
        ctx.fail(_not_found(ctx, zone, old_name), rel)
        return []
    changed = (new_value is not None and new_value != target.data) or (
        new_ttl is not None and new_ttl != target.ttl
    )
    if new_value is not None:
        target.data = new_value
    if new_ttl is not None:
        target.ttl = new_ttl
    ctx.done(rel, changed=changed)
    return [record_object(zone, target)] if ctx.bound.switch("PassThru") else []


def remove_record(ctx: Context) -> list[Any]:
    """Remove-DnsServerResourceRecord -ZoneName (-Name -RRType [-RecordData] | -InputObject)."""
    zone = _zone(ctx)
    if zone is None:
        return []
    objects = ctx.bound.get("InputObject") or list(ctx.input)
    targets: list[tuple[str, str, str | None]] = []
    for obj in objects if isinstance(objects, list) else [objects]:
        name, rtype, value, _ = _data_of(ctx, "InputObject", obj)
        targets.append((_relative(zone, name), rtype, value))
    if ctx.bound.has("Name"):
        name = _relative(zone, str(ctx.bound.get("Name")))
        rtype = str(ctx.bound.get("RRType"))
        values: list[str | None] = list(ctx.bound.strings("RecordData")) or [None]
        targets.extend((name, rtype, v) for v in values)
    for name, rtype, value in targets:
        wanted = None if value is None else _canonical(rtype.upper(), value)
        doomed = [r for r in _matching(zone, name, rtype) if wanted is None or r.data == wanted]
        if not doomed:
            ctx.fail(_not_found(ctx, zone, name), name)
            continue
        for rec in doomed:
            zone.records.remove(rec)
        ctx.done(name)
    return []


_COMMON_DNS = (Param("ZoneName", "string"), Param("PassThru", "switch"))
GET_RECORDS = Cmdlet(
    Signature(
        "Get-DnsServerResourceRecord",
        (
            Param("ZoneName", "string"),
            Param("Name", "string"),
            Param("RRType", "string"),
            Param("Node", "switch"),
            Param("ZoneScope", "string"),
        ),
        (pset("Name", ("ZoneName",), ("Name", "RRType", "Node", "ZoneScope")),),
        positional=("ZoneName", "Name"),
    ),
    get_records,
    role="vmm",
)


def _add_signature(rtype: str, data: str, *, create_ptr: bool = True) -> Signature:
    switches = ("AllowUpdateAny", "AgeRecord", *(("CreatePtr",) if create_ptr else ()))
    return Signature(
        f"Add-DnsServerResourceRecord{rtype}",
        (
            *_COMMON_DNS,
            Param("Name", "string"),
            Param(data, "strings"),
            # A TimeSpan: "00:05:00", "1.00:00:00", PT5M or a deserialised <TS> all bind.
            Param("TimeToLive", "timespan"),
            *(Param(s, "switch") for s in switches),
        ),
        (pset(rtype, ("ZoneName", "Name", data), ("TimeToLive", "PassThru", *switches)),),
        positional=("ZoneName", "Name", data),
    )


ADD_A = Cmdlet(_add_signature("A", "IPv4Address"), add_a, role="vmm", mutating=True)
ADD_AAAA = Cmdlet(_add_signature("AAAA", "IPv6Address"), add_aaaa, role="vmm", mutating=True)
ADD_PTR = Cmdlet(
    _add_signature("Ptr", "PtrDomainName", create_ptr=False), add_ptr, role="vmm", mutating=True
)
SET_RECORD = Cmdlet(
    Signature(
        "Set-DnsServerResourceRecord",
        (
            *_COMMON_DNS,
            # CimInstance parameters: only the server's own record objects bind (from a
            # pipeline on the server); a client's hashtable or deserialised copy does not
            Param("OldInputObject", "object", accepts=_CIM),
            Param("NewInputObject", "object", accepts=_CIM),
        ),
        (pset("Update", ("ZoneName", "OldInputObject", "NewInputObject"), ("PassThru",)),),
        positional=("ZoneName",),
    ),
    set_record,
    role="vmm",
    mutating=True,
)
REMOVE_RECORD = Cmdlet(
    Signature(
        "Remove-DnsServerResourceRecord",
        (
            *_COMMON_DNS,
            Param("Name", "string"),
            Param("RRType", "string"),
            Param("RecordData", "strings"),
            Param("InputObject", "object"),
            Param("Force", "switch"),
        ),
        (
            pset("Name", ("ZoneName", "Name", "RRType"), ("RecordData", "Force", "PassThru")),
            pset("InputObject", ("ZoneName", "InputObject"), ("Force", "PassThru")),
        ),
        positional=("ZoneName", "RRType", "Name"),
        pipeline="InputObject",
    ),
    remove_record,
    role="vmm",
    mutating=True,
)

CMDLETS = (GET_RECORDS, ADD_A, ADD_AAAA, ADD_PTR, SET_RECORD, REMOVE_RECORD)
