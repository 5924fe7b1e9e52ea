"""What a name, a DNS name, a URL and a ``host[:port]`` may be.

Names travel to hosts, terminals, logs and reports, so they keep to one rule (see
``plans/FORMAT.md``, "Names"):

- no control characters: C0 (U+0000-U+001F), DEL (U+007F) and C1 (U+0080-U+009F), which
  terminals and the PowerShell host interpret;
- no bidirectional controls (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069), which
  make a name display differently from what it is ("\\u202egnp.exe");
- no invisible characters (U+200B-U+200D, U+2060, U+FEFF), which make two names look equal;
- no leading or trailing white space.

Free text (a plan's description, a manual action's instructions, an operator's comment or
notes) may hold any printable text, line breaks and tabs, but no other control character
(C0, DEL, C1) and no bidirectional embedding, override or isolate (U+202A-U+202E,
U+2066-U+2069), which reorder what a reader sees; a CR LF line break is read as LF.

DNS names keep to RFC 1035/1123: labels of 1 to 63 letters, digits, hyphens (and the
underscore of service labels), no hyphen at either end of a label, at most 253 characters.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from plans.errors import ConfigurationError

BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
INVISIBLE = frozenset("\u200b\u200c\u200d\u2060\ufeff")
# The controls that reorder a run of text (embeddings, overrides, isolates); the marks
# (U+061C, U+200E, U+200F) only set the direction of neighbouring neutrals, and right-to-left
# text needs them, so free text may hold those.
BIDI_REORDERING = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
TEXT_WHITESPACE = frozenset("\n\t")

MAX_DNS_NAME = 253
MAX_DNS_LABEL = 63

_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?$")


def _code(ch: str) -> str:
    return f"U+{ord(ch):04X}"


# Any character :func:`name_problem` refuses: a name without one is checked by one search.
_NOT_IN_NAME = re.compile("[\x00-\x1f\x7f-\x9f" + "".join(sorted(BIDI_CONTROLS | INVISIBLE)) + "]")


def name_problem(text: str) -> str | None:
    """Why ``text`` cannot be a name, or None when it can."""
    if _NOT_IN_NAME.search(text) is None:
        return "starts or ends with white space; remove it" if text != text.strip() else None
    for ch in text:
        code = ord(ch)
        if code < 0x20 or code == 0x7F or 0x80 <= code <= 0x9F:
            return f"contains the control character {_code(ch)}; names are printable text"
        if ch in BIDI_CONTROLS:
            return (
                f"contains the bidirectional control {_code(ch)}, which makes the name display "
                "differently from what it is; remove it"
            )
        if ch in INVISIBLE:
            return f"contains the invisible character {_code(ch)}; remove it"
    if text != text.strip():
        return "starts or ends with white space; remove it"
    return None


def check_name(text: str) -> str:
    """Pydantic validator: ``text`` if it is a valid name, else ValueError saying why."""
    problem = name_problem(text)
    if problem:
        raise ValueError(f"name {_shown(text)} {problem}")
    return text


def text_problem(text: str, *, lines: bool = True) -> str | None:
    """Why ``text`` cannot be free text, or None when it can.

    Tabs are allowed, and line breaks (LF, or CR LF) unless ``lines`` is False (one-line text
    such as an actor's name). The position is given as line and column within the text.
    """
    line, column = 1, 0
    for index, ch in enumerate(text):
        column += 1
        if ch == "\t":
            continue
        if lines and ch == "\n":
            line, column = line + 1, 0
            continue
        if lines and ch == "\r" and text[index + 1 : index + 2] == "\n":
            continue  # CR LF is one line break
        code = ord(ch)
        if code < 0x20 or code == 0x7F or 0x80 <= code <= 0x9F:
            allowed = "line breaks and tabs" if lines else "tabs"
            return (
                f"contains the control character {_code(ch)} at line {line}, column {column} "
                f"of the text; only {allowed} may be in it"
            )
        if ch in BIDI_REORDERING:
            return (
                f"contains the bidirectional control {_code(ch)} at line {line}, column "
                f"{column} of the text, which makes it display differently from what it is; "
                "remove it"
            )
    return None


def check_text(text: str) -> str:
    """Pydantic validator: free ``text`` with CR LF read as LF, else ValueError saying why."""
    problem = text_problem(text)
    if problem:
        raise ValueError(f"text {problem}")
    return text.replace("\r\n", "\n")


def check_line(text: str) -> str:
    """Pydantic validator: one line of free ``text`` (an actor's name), else ValueError."""
    problem = text_problem(text, lines=False)
    if problem:
        raise ValueError(f"text {problem}")
    return text


def require_text(text: str, what: str, *, lines: bool = True) -> str:
    """Free ``text`` an operator gave at run time (``what`` names it: "comment", "by"), with
    CR LF read as LF; ConfigurationError saying why when it is not free text."""
    problem = text_problem(text, lines=lines)
    if problem:
        raise ConfigurationError(f"{what} {problem}")
    return text.replace("\r\n", "\n") if lines else text


def _shown(text: str) -> str:
    """A name as it may be shown in an error: escaped, shortened."""
    short = text if len(text) <= 40 else text[:37] + "..."
    return ascii(short)


def dns_name_problem(name: str, *, what: str = "DNS name") -> str | None:
    """Why ``name`` (relative or absolute, ``@`` the apex) breaks RFC 1035/1123, or None."""
    if name == "@":
        return None
    bare = name[:-1] if name.endswith(".") else name
    if not bare:
        return f"{what} {_shown(name)} is empty; write a name such as sql-01"
    if len(bare) > MAX_DNS_NAME:
        return f"{what} {_shown(name)} is longer than {MAX_DNS_NAME} characters"
    for label in bare.split("."):
        if not label:
            return f"{what} {_shown(name)} has an empty label (two dots in a row, or a leading dot)"
        if len(label) > MAX_DNS_LABEL:
            return f"{what} {_shown(name)} has a label longer than {MAX_DNS_LABEL} characters"
        if not _LABEL.match(label):
            return (
                f"{what} {_shown(name)} has the label {_shown(label)}; labels hold letters, "
                "digits and hyphens, and do not start or end with a hyphen"
            )
    return None


def absolute(name: str, zone: str) -> str:
    """``name`` made absolute (lower case, trailing dot) in ``zone``."""
    origin = zone.rstrip(".").lower() + "."
    if name == "@":
        return origin
    if name.endswith("."):
        return name.lower()
    return f"{name.lower()}.{origin}"


def in_zone(name: str, zone: str) -> bool:
    """Whether the absolute form of ``name`` is ``zone`` or lies below it."""
    full = absolute(name, zone)
    origin = zone.rstrip(".").lower() + "."
    return full == origin or full.endswith("." + origin)


def host_problem(host: str) -> str | None:
    """Why ``host`` is neither an IP address nor a host name, or None."""
    if not host:
        return "has no host"
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if ":" in host:
        return f"has the host {_shown(host)}, which is not an IPv6 address"
    problem = dns_name_problem(host, what="host")
    return f"has a bad host: {problem}" if problem else None


def host_port_problem(address: str) -> str | None:
    """Why ``address`` is not ``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
    text = address.strip()
    port = ""
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed:
            return f"{_shown(address)} opens '[' without closing it; write [v6-address]:port"
        if rest and not rest.startswith(":"):
            return f"{_shown(address)} has text after ']'; write [v6-address]:port"
        port = rest[1:]
        if rest and not port:
            return f"{_shown(address)} has an empty port; write host[:port] with a port 1-65535"
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{_shown(address)} has {_shown(host)} in brackets, which is not an IPv6 address"
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not port:
            return f"{_shown(address)} has an empty port; write host[:port] with a port 1-65535"
        problem = host_problem(host)
        if problem:
            return f"{_shown(address)} {problem}"
    else:
        problem = host_problem(text)
        if problem:
            return f"{_shown(address)} {problem}"
    if port and (not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535):
        return f"{_shown(address)} has an invalid port; write host[:port] with a port 1-65535"
    return None


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a usable WinRM URL (http/https, a host, a port 1-65535, no user)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"{_shown(url)} is not a URL ({exc}); write it like 'https://host:5986/wsman'"
    if parts.scheme not in ("http", "https"):
        return f"{_shown(url)} is not an http:// or https:// URL"
    if "@" in parts.netloc:
        # Never show the user information: it may hold a password.
        return (
            "the URL carries user information ('user:password@'), a literal credential; "
            "remove it and name an entry of fabric.credentials instead"
        )
    netloc = parts.netloc
    if netloc.startswith("["):
        inner, closed, rest = netloc[1:].partition("]")
        if not closed:
            return f"{_shown(url)} opens '[' without closing it"
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            return f"{_shown(url)} has {_shown(inner)} in brackets, which is not an IPv6 address"
        if rest and not rest.startswith(":"):
            return f"{_shown(url)} has text after ']'"
    else:
        problem = host_problem(parts.hostname or "")
        if problem:
            return f"{_shown(url)} {problem}"
    try:
        port = parts.port
    except ValueError:
        return f"{_shown(url)} has an invalid port; use 1-65535"
    if port is not None and not 1 <= port <= 65535:
        return f"{_shown(url)} has an invalid port; use 1-65535"
    if netloc.endswith(":"):
        return f"{_shown(url)} has an empty port; use 1-65535 or leave ':' out"
    return None
