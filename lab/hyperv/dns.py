"""Windows DNS cmdlets on the VMM hosts: Get/Add/Set/Remove of resource records.

Records come back one object per value, shaped like the DnsServer module's CIM instances;
``Set-DnsServerResourceRecord`` takes the old and a modified clone and, like the real cmdlet,
refuses to change a record's name or type. A zone listed with several servers is shared by
them (AD-integrated).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from lab.hyperv import errors
from lab.hyperv.context import Cmdlet, Context, prop
from lab.hyperv.params import Param, Signature, pset
from lab.objects import ErrorInfo, LabObject
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


_ISO_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?"
    r"(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def ttl_seconds(value: Any, default: int) -> int:
    """A TTL in seconds from a TimeSpan as clients send it.

    Accepts a ``timedelta``, seconds, TimeSpan text (``00:05:00``, ``1.00:00:00``) or an
    xs:duration (``PT5M``, how CLIXML writes a TimeSpan).
    """
    if value is None:
        return default
    if isinstance(value, timedelta):
        return int(value.total_seconds())
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip()
    iso = _ISO_DURATION.match(text)
    if iso and text != "P":
        units = {k: float(v) for k, v in iso.groupdict().items() if v}
        return int(
            units.get("d", 0) * 86400
            + units.get("h", 0) * 3600
            + units.get("m", 0) * 60
            + units.get("s", 0)
        )
    if ":" in text:
        days = 0.0
        head, _, rest = text.partition(":")
        if "." in head:
            day_text, head = head.split(".", 1)
            days = float(day_text)
        parts = [float(p) for p in [head, *rest.split(":")]]
        while len(parts) < 3:
            parts.append(0.0)
        return int(days * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2])
    return int(float(text))


def _add(ctx: Context, rtype: str) -> list[Any]:
    """Add-DnsServerResourceRecordA/AAAA -ZoneName -Name -IPv4Address|-IPv6Address."""
    zone = _zone(ctx)
    if zone is None:
        return []
    name = _relative(zone, str(ctx.bound.get("Name")))
    ttl = ttl_seconds(ctx.bound.get("TimeToLive"), 3600)
    out = []
    for ip in ctx.bound.strings(_DATA_KEYS[rtype]):
        if any(r.data == ip for r in _matching(zone, name, rtype)):
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
        rec = Record(name, rtype, ip, ttl)
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


def _data_of(obj: Any) -> tuple[str, str, str | None, int | None]:
    """(HostName, RecordType, value, ttl seconds) of a record object sent by a client."""
    rtype = str(prop(obj, "RecordType") or "A").upper()
    data = prop(obj, "RecordData")
    value = prop(data, _DATA_KEYS.get(rtype, "Data")) if data is not None else None
    if value is None and isinstance(data, str):
        value = data
    ttl = prop(obj, "TimeToLive")
    return (
        str(prop(obj, "HostName") or ""),
        rtype,
        None if value is None else str(value),
        None if ttl is None else ttl_seconds(ttl, 3600),
    )


def set_record(ctx: Context) -> list[Any]:
    """Set-DnsServerResourceRecord -OldInputObject -NewInputObject -ZoneName."""
    zone = _zone(ctx)
    if zone is None:
        return []
    old_name, old_type, old_value, _ = _data_of(ctx.bound.get("OldInputObject"))
    new_name, new_type, new_value, new_ttl = _data_of(ctx.bound.get("NewInputObject"))
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
        name, rtype, value, _ = _data_of(obj)
        targets.append((_relative(zone, name), rtype, value))
    if ctx.bound.has("Name"):
        name = _relative(zone, str(ctx.bound.get("Name")))
        rtype = str(ctx.bound.get("RRType"))
        values: list[str | None] = list(ctx.bound.strings("RecordData")) or [None]
        targets.extend((name, rtype, v) for v in values)
    for name, rtype, value in targets:
        doomed = [r for r in _matching(zone, name, rtype) if value is None or r.data == value]
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


def _add_signature(rtype: str, data: str) -> Signature:
    return Signature(
        f"Add-DnsServerResourceRecord{rtype}",
        (
            *_COMMON_DNS,
            Param("Name", "string"),
            Param(data, "strings"),
            Param("TimeToLive", "object"),
            Param("AllowUpdateAny", "switch"),
            Param("CreatePtr", "switch"),
            Param("AgeRecord", "switch"),
        ),
        (
            pset(
                rtype,
                ("ZoneName", "Name", data),
                ("TimeToLive", "AllowUpdateAny", "CreatePtr", "AgeRecord", "PassThru"),
            ),
        ),
        positional=("ZoneName", "Name", data),
    )


ADD_A = Cmdlet(_add_signature("A", "IPv4Address"), add_a, role="vmm", mutating=True)
ADD_AAAA = Cmdlet(_add_signature("AAAA", "IPv6Address"), add_aaaa, role="vmm", mutating=True)
SET_RECORD = Cmdlet(
    Signature(
        "Set-DnsServerResourceRecord",
        (*_COMMON_DNS, Param("OldInputObject", "object"), Param("NewInputObject", "object")),
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

CMDLETS = (GET_RECORDS, ADD_A, ADD_AAAA, SET_RECORD, REMOVE_RECORD)
