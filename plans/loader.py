"""Safe YAML loading that remembers where every node came from.

Plan files come from operators and sometimes from places less friendly, so loading is
defensive and bounded: files over :data:`MAX_FILE_BYTES` are refused before they are read in
full, binary and non-UTF-8 content is refused, only one document per file, no tags beyond
YAML's core scalars, aliases limited to :data:`MAX_ALIASES` and the expanded document to
:data:`MAX_NODES` nodes (the "billion laughs" bomb), nesting to :data:`MAX_DEPTH` levels, and
duplicate keys are errors naming both lines. Every failure is a :class:`~plans.problems.Problem`
with a line and column; nothing here raises for bad input.

Loading builds plain Python data (dicts, lists, scalars) plus :class:`Marks`, the line and
column of every key and value by document path, which validation uses to point at the node
a problem is about.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from plans.files import MAX_TEXT_BYTES, FileRefused, FileTooLarge, read_bounded
from plans.problems import DocPath, Problem

MAX_FILE_BYTES = MAX_TEXT_BYTES  # plan files are a few KB; anything near this is a mistake
MAX_DEPTH = 64  # nesting levels of mappings and lists
MAX_ALIASES = 100  # alias uses (*name) per file
MAX_NODES = 100_000  # nodes after aliases are expanded

# libyaml's parser when PyYAML has it (about 20 times faster), else PyYAML's own. Both give the
# same events and positions; error texts differ a little and are normalised below.
_PARSER: Any = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader

# Tags the constructor may build; everything else (!!python/..., !!binary, custom !tags) is
# refused, so a file can never make the loader run code or allocate something unexpected.
_SCALAR_TAGS = {
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:timestamp",
}
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"

_ScalarEvent = yaml.ScalarEvent
_MappingStartEvent = yaml.MappingStartEvent
_MappingEndEvent = yaml.MappingEndEvent
_SequenceStartEvent = yaml.SequenceStartEvent
_SequenceEndEvent = yaml.SequenceEndEvent
_AliasEvent = yaml.AliasEvent
_DocumentStartEvent = yaml.DocumentStartEvent

Position = tuple[int, int]  # 1-based line and column


@dataclass
class Marks:
    """Where each node of a loaded document sits in its file.

    ``values`` maps a document path to the position of the value at that path; ``keys`` maps
    the path of a mapping entry to the position of its key.
    """

    values: dict[DocPath, Position] = field(default_factory=dict)
    keys: dict[DocPath, Position] = field(default_factory=dict)

    def value(self, path: DocPath) -> Position:
        """Position of the value at ``path``, or of its nearest ancestor that exists."""
        for end in range(len(path), -1, -1):
            position = self.values.get(path[:end])
            if position is not None:
                return position
        return (1, 1)

    def key(self, path: DocPath) -> Position:
        """Position of the key of the entry at ``path`` (its value's if there is no key)."""
        position = self.keys.get(path)
        return position if position is not None else self.value(path)


@dataclass
class LoadedFile:
    """One YAML file turned into plain data with its marks."""

    file: str
    data: dict[str, Any]
    marks: Marks
    problems: list[Problem] = field(default_factory=list)


class _Refused(Exception):
    """Internal: loading stops with this problem."""

    def __init__(self, message: str, position: Position = (0, 0)) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


def load_file(path: str | Path, display: str | None = None) -> LoadedFile | Problem:
    """Load one YAML file; return its data and marks, or the one problem that stopped it.

    ``display`` is the file name used in problems (default: ``str(path)``).
    """
    name = display if display is not None else str(path)
    try:
        text = _read_text(Path(path))
        data, marks, issues = load_text(text)
    except _Refused as refused:
        line, col = refused.position
        return Problem(name, line, col, refused.message)
    problems = [Problem(name, line, col, message) for message, (line, col) in issues]
    return LoadedFile(name, data, marks, problems)


def load_text(text: str) -> tuple[dict[str, Any], Marks, list[tuple[str, Position]]]:
    """Parse YAML text into a mapping, its marks and non-fatal issues (duplicate keys).

    Raises ``_Refused`` when the text cannot be loaded at all.
    """
    if not text.strip():
        raise _Refused("the file is empty; a plan file is a YAML mapping (version, fabric, plans)")
    events, anchored = _checked_events(text)
    if not anchored:
        # No anchors and no aliases (the usual plan file): the events are built into data
        # directly, without composing a node tree first; the result is the same.
        direct = _EventBuilder(events)
        top = direct.document()
        if top is None:
            raise _Refused("the file holds only comments; a plan file is a YAML mapping")
        data, position = top
        marks, issues = direct.marks, direct.issues
    else:
        try:
            node = _EventComposer(events).get_single_node()
        except yaml.YAMLError as exc:
            raise _yaml_refusal(exc, text) from None
        except RecursionError:
            raise _Refused(f"the YAML nests deeper than {MAX_DEPTH} levels") from None
        if node is None:
            raise _Refused("the file holds only comments; a plan file is a YAML mapping")
        builder = _Builder()
        data = builder.build(node, ())
        position = _pos(node)
        marks, issues = builder.marks, builder.issues
    if not isinstance(data, dict):
        raise _Refused(
            "the top level must be a mapping with keys such as version, include, fabric and "
            f"plans, not {describe(data)}",
            position,
        )
    return data, marks, issues


def describe(value: Any) -> str:
    """Plain words for the kind of a YAML value, for error messages."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"text ({shown!r})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _read_text(path: Path) -> str:
    try:
        if path.is_dir():
            raise _Refused("is a directory, not a file; name the YAML files to load")
        if not path.exists():
            raise _Refused("file not found")
        if not path.is_file():
            raise _Refused("is not a regular file")
        # Bounded, non-blocking and regular files only: a file swapped for a FIFO or a
        # device after the checks above still cannot hang or flood the loader.
        raw = read_bounded(path, limit=MAX_FILE_BYTES, what="plan file")
    except FileTooLarge:
        raise _Refused(
            f"the file is larger than {MAX_FILE_BYTES // 1024} KiB, the limit for plan files; "
            "split it and use include"
        ) from None
    except FileRefused as exc:
        raise _Refused(str(exc)) from None
    except OSError as exc:
        raise _Refused(f"cannot read the file ({exc.strerror or exc})") from None
    if b"\x00" in raw:
        line, col = _offset_position(raw, raw.index(b"\x00"))
        raise _Refused("this is a binary file (it contains NUL bytes), not YAML text", (line, col))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, col = _offset_position(raw, exc.start)
        raise _Refused(
            f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x}); save it as UTF-8",
            (line, col),
        ) from None
    return text


def _offset_position(raw: bytes, offset: int) -> Position:
    line = raw.count(b"\n", 0, offset) + 1
    col = offset - (raw.rfind(b"\n", 0, offset) + 1) + 1
    return line, col


def _pos(node: Node) -> Position:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _EventComposer(yaml.composer.Composer, yaml.resolver.Resolver):
    """PyYAML's composer (with the safe resolver) fed from already-checked parser events.

    Parsing is most of the cost of loading, so the events checked by :func:`_checked_events`
    are composed as they are instead of parsing the text a second time.
    """

    def __init__(self, events: list[yaml.Event]) -> None:
        self._events = deque(events)
        yaml.composer.Composer.__init__(self)
        yaml.resolver.Resolver.__init__(self)

    def check_event(self, *choices: type[yaml.Event]) -> bool:
        if not self._events:
            return False
        return not choices or isinstance(self._events[0], choices)

    def peek_event(self) -> yaml.Event:
        return self._events[0]

    def get_event(self) -> yaml.Event:
        return self._events.popleft()


def _checked_events(text: str) -> tuple[list[yaml.Event], bool]:
    """Parse to events, refusing deep nesting, alias floods and multiple documents.

    The parser is iterative, but PyYAML's composer and our builder recurse, so depth must be
    bounded here, on the event stream, before anything is built. Also returns whether any
    node has an anchor or is an alias (such a document goes through PyYAML's composer).
    """
    depth = aliases = documents = nodes = 0
    anchored = False
    events: list[yaml.Event] = []
    append = events.append
    event: Any
    try:
        for event in yaml.parse(text, Loader=_PARSER):
            append(event)
            kind = type(event)
            if kind is _ScalarEvent or kind is _MappingStartEvent or kind is _SequenceStartEvent:
                nodes += 1
                if nodes > MAX_NODES:
                    raise _Refused(
                        f"the document has more than {MAX_NODES} values; split it",
                        _mark(event.start_mark),
                    )
                if event.anchor is not None:
                    anchored = True
                if kind is _ScalarEvent:
                    continue
                depth += 1
                if depth > MAX_DEPTH:
                    raise _Refused(
                        f"the YAML nests deeper than {MAX_DEPTH} levels", _mark(event.start_mark)
                    )
            elif kind is _MappingEndEvent or kind is _SequenceEndEvent:
                depth -= 1
            elif kind is _AliasEvent:
                nodes += 1
                if nodes > MAX_NODES:
                    raise _Refused(
                        f"the document has more than {MAX_NODES} values; split it",
                        _mark(event.start_mark),
                    )
                anchored = True
                aliases += 1
                if aliases > MAX_ALIASES:
                    raise _Refused(
                        f"more than {MAX_ALIASES} aliases (*name); write the values out",
                        _mark(event.start_mark),
                    )
            elif kind is _DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise _Refused(
                        "a plan file holds one YAML document; remove the second '---' or "
                        "split the file",
                        _mark(event.start_mark),
                    )
    except yaml.YAMLError as exc:
        raise _yaml_refusal(exc, text) from None
    return events, anchored


def _mark(mark: Any) -> Position:
    return mark.line + 1, mark.column + 1


def _char_at(text: str, mark: Any) -> str | None:
    """The character a parser mark points at, if the mark is inside the text."""
    if mark is None:
        return None
    lines = text.split("\n")
    line, column = int(mark.line), int(mark.column)
    if 0 <= line < len(lines) and 0 <= column < len(lines[line]):
        return lines[line][column]
    return None


def _yaml_refusal(exc: yaml.YAMLError, text: str) -> _Refused:
    """Turn PyYAML's multi-line error into one line with a position."""
    if isinstance(exc, yaml.reader.ReaderError):
        return _Refused(
            f"the file contains a control character (#x{exc.character:04x}) that YAML does not "
            "allow; remove it",
            (1, 1) if exc.position is None else (1, exc.position + 1),
        )
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = (exc.problem or "").strip()
        found = _char_at(text, mark)
        if "cannot start any token" in problem and found is not None:
            problem = f"found character {found!r} that cannot start any token"
        context = (exc.context or "").strip()
        message = f"YAML syntax error: {context}: {problem}" if context else problem
        if not message:
            message = "YAML syntax error"
        elif not context:
            message = f"YAML syntax error: {message}"
        if found == "\t":
            message += " (YAML does not allow tabs for indentation; use spaces)"
        return _Refused(message, _mark(mark) if mark is not None else (0, 0))
    return _Refused(f"YAML error: {exc}")


class _Builder:
    """Turns composed nodes into plain data, recording marks and enforcing the budgets."""

    def __init__(self) -> None:
        self.marks = Marks()
        self.issues: list[tuple[str, Position]] = []
        self.nodes = 0
        self.active: set[int] = set()
        self.constructor = yaml.constructor.SafeConstructor()

    def build(self, node: Node, path: DocPath) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _Refused(
                f"the document expands to more than {MAX_NODES} nodes (aliases that repeat "
                "aliases?); write it out plainly",
                _pos(node),
            )
        if len(path) > MAX_DEPTH:
            raise _Refused(f"the YAML nests deeper than {MAX_DEPTH} levels", _pos(node))
        self.marks.values.setdefault(path, _pos(node))
        if id(node) in self.active:
            raise _Refused("an alias refers to the value that contains it", _pos(node))
        if isinstance(node, ScalarNode):
            return self._scalar(node)
        self.active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            if isinstance(node, SequenceNode):
                if node.tag != _SEQ_TAG:
                    raise _Refused(f"unsupported YAML tag {node.tag!r} on a list", _pos(node))
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        finally:
            self.active.discard(id(node))
        raise _Refused("unsupported YAML node", _pos(node))

    def _scalar(self, node: ScalarNode) -> Any:
        if node.tag not in _SCALAR_TAGS:
            raise _Refused(
                f"unsupported YAML tag {node.tag!r}; plan files use plain values", _pos(node)
            )
        try:
            return self.constructor.construct_object(node)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise _Refused(
                f"cannot read the value {node.value[:40]!r}: {reason}", _pos(node)
            ) from None

    def _mapping(self, node: MappingNode, path: DocPath) -> dict[str, Any]:
        if node.tag != _MAP_TAG:
            raise _Refused(f"unsupported YAML tag {node.tag!r} on a mapping", _pos(node))
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise _Refused("a key must be plain text, not a list or mapping", _pos(key_node))
            if key_node.tag == _MERGE_TAG:
                raise _Refused(
                    "merge keys ('<<') are not supported; write the keys out", _pos(key_node)
                )
            # Keys are names: keep the text as written, so "300:" or "yes:" stay strings.
            key = key_node.value
            child = (*path, key)
            if key in result:
                # Not fatal: report it and keep the first value, so other problems still show.
                first_line = self.marks.keys[child][0]
                message = f"duplicate key {key!r} (first defined on line {first_line}); keep one"
                self.issues.append((message, _pos(key_node)))
                continue
            self.marks.keys[child] = _pos(key_node)
            result[key] = self.build(value_node, child)
        return result


class _EventBuilder:
    """Builds plain data and marks straight from checked parser events of a document without
    anchors or aliases: what :class:`_EventComposer` and :class:`_Builder` together give (the
    same data, marks, issues and refusals, in the same order), without a node per value.

    Tags are resolved as PyYAML's composer resolves them, and scalars other than text are
    constructed by PyYAML's safe constructor.
    """

    def __init__(self, events: list[yaml.Event]) -> None:
        self.events = events
        self.index = 0
        self.marks = Marks()
        self.issues: list[tuple[str, Position]] = []
        self.nodes = 0
        self.resolver: Any = yaml.resolver.Resolver()
        self.constructor = yaml.constructor.SafeConstructor()

    def document(self) -> tuple[Any, Position] | None:
        """The document's value and position, or None when the stream holds no document."""
        events = self.events
        index = 0
        while index < len(events) and type(events[index]) is not _DocumentStartEvent:
            index += 1
        if index >= len(events):
            return None
        self.index = index + 1
        first = events[self.index]
        return self.build(()), _mark(first.start_mark)

    def _tag(self, event: Any, kind: type[Node]) -> str:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.resolver.resolve(
                kind, event.value if kind is ScalarNode else None, event.implicit
            )
        return str(tag)

    def build(self, path: DocPath) -> Any:
        event = self.events[self.index]
        self.index += 1
        position = _mark(event.start_mark)
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _Refused(
                f"the document expands to more than {MAX_NODES} nodes (aliases that repeat "
                "aliases?); write it out plainly",
                position,
            )
        if len(path) > MAX_DEPTH:
            raise _Refused(f"the YAML nests deeper than {MAX_DEPTH} levels", position)
        self.marks.values.setdefault(path, position)
        kind = type(event)
        if kind is _ScalarEvent:
            return self._scalar(event, position)
        if kind is _MappingStartEvent:
            return self._mapping(event, path, position)
        if kind is _SequenceStartEvent:
            tag = self._tag(event, SequenceNode)
            if tag != _SEQ_TAG:
                raise _Refused(f"unsupported YAML tag {tag!r} on a list", position)
            items: list[Any] = []
            events = self.events
            while type(events[self.index]) is not _SequenceEndEvent:
                items.append(self.build((*path, len(items))))
            self.index += 1
            return items
        raise _Refused("unsupported YAML node", position)

    def _scalar(self, event: Any, position: Position) -> Any:
        tag = self._tag(event, ScalarNode)
        if tag == _STR_TAG:
            return event.value
        if tag not in _SCALAR_TAGS:
            raise _Refused(f"unsupported YAML tag {tag!r}; plan files use plain values", position)
        node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
        try:
            return self.constructor.construct_object(node)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise _Refused(
                f"cannot read the value {node.value[:40]!r}: {reason}", position
            ) from None

    def _mapping(self, event: Any, path: DocPath, position: Position) -> dict[str, Any]:
        tag = self._tag(event, MappingNode)
        if tag != _MAP_TAG:
            raise _Refused(f"unsupported YAML tag {tag!r} on a mapping", position)
        result: dict[str, Any] = {}
        events = self.events
        keys = self.marks.keys
        while True:
            key_event = events[self.index]
            if type(key_event) is _MappingEndEvent:
                self.index += 1
                return result
            key_position = _mark(key_event.start_mark)
            if type(key_event) is not _ScalarEvent:
                raise _Refused("a key must be plain text, not a list or mapping", key_position)
            if self._tag(key_event, ScalarNode) == _MERGE_TAG:
                raise _Refused(
                    "merge keys ('<<') are not supported; write the keys out", key_position
                )
            self.index += 1
            # Keys are names: keep the text as written, so "300:" or "yes:" stay strings.
            key = key_event.value
            child = (*path, key)
            if key in result:
                # Not fatal: report it and keep the first value, so other problems still show.
                first_line = keys[child][0]
                message = f"duplicate key {key!r} (first defined on line {first_line}); keep one"
                self.issues.append((message, key_position))
                self._skip()
                continue
            keys[child] = key_position
            result[key] = self.build(child)

    def _skip(self) -> None:
        """Step over one value's events (a duplicate key's value is not built)."""
        events = self.events
        depth = 0
        while True:
            kind = type(events[self.index])
            self.index += 1
            if kind is _MappingStartEvent or kind is _SequenceStartEvent:
                depth += 1
            elif kind is _MappingEndEvent or kind is _SequenceEndEvent:
                depth -= 1
            if depth == 0:
                return
