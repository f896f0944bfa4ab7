"""Load YAML while remembering the line of every key and list item, so that a validation error at
``categories.S99.action`` can be reported as ``file.yaml:12: ...``. Duplicate keys, which PyYAML
silently lets the last one win, are an error here. So are a recursive alias (an anchor used inside
itself) and a document whose aliases expand to more than ``MAX_NODES`` values: both would otherwise
end in a ``RecursionError`` or exhaust memory instead of a file:line error."""

from __future__ import annotations

from typing import Any

import yaml

Loc = tuple[str | int, ...]

#: Values a policy document may expand to (aliases included); shipped policies have a few hundred.
MAX_NODES = 20_000


class YamlIssue(Exception):
    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def load_marked(text: str) -> tuple[Any, dict[Loc, int]]:
    """(value, lines): ``lines`` maps each key path (and list index path) to its 1-based line;
    ``()`` maps to the document's first line."""
    try:
        loader = yaml.SafeLoader(text)  # checks the characters: raises ReaderError
    except yaml.reader.ReaderError as error:
        line = text[: error.position].count("\n") + 1
        raise YamlIssue(line, f"invalid YAML: control character U+{error.character:04X} is not allowed") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {(): 1}
        lines: dict[Loc, int] = {(): node.start_mark.line + 1}
        return _Builder(loader, lines).construct(node, ()), lines
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "invalid YAML"
        context = error.context_mark
        if error.problem and error.context and context is not None and mark is not None \
                and context.line != mark.line:
            problem += f" ({error.context} started at line {context.line + 1})"
        raise YamlIssue(mark.line + 1 if mark else None, f"invalid YAML: {problem}") from None
    except yaml.YAMLError as error:
        raise YamlIssue(None, f"invalid YAML: {error}") from None
    except RecursionError:  # a merge key (`<<: *a`) inside its own anchor: PyYAML recurses
        raise YamlIssue(None, "recursive alias: an anchor is used inside itself") from None
    except (ValueError, OverflowError) as error:  # PyYAML: "\\U00200000" escapes, impossible dates
        raise YamlIssue(None, f"invalid YAML: {error}") from None
    finally:
        loader.dispose()


class _Builder:
    """Constructs the document node by node, recording lines, refusing recursion and blow-ups."""

    def __init__(self, loader: yaml.SafeLoader, lines: dict[Loc, int]) -> None:
        self.loader = loader
        self.lines = lines
        self.active: set[int] = set()  # ids of the collection nodes being constructed
        self.count = 0

    def construct(self, node: yaml.Node, path: Loc) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise YamlIssue(node.start_mark.line + 1, f"the document expands to more than {MAX_NODES} values "
                                                      "(aliases repeated inside aliases?)")
        if not isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            return self.loader.construct_object(node, deep=True)
        if id(node) in self.active:
            raise YamlIssue(node.start_mark.line + 1, "recursive alias: an anchor is used inside itself")
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            return self._sequence(node, path)
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: Loc) -> dict[Any, Any]:
        self.loader.flatten_mapping(node)  # `<<: *anchor` merge keys
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlIssue(line, "unsupported mapping key (a list or mapping)")
            key = self.loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise YamlIssue(line, f"unsupported mapping key {key!r}")
            if key in result:
                raise YamlIssue(line, f"duplicate key {key!r}")
            self.lines[(*path, key)] = line
            result[key] = self.construct(value_node, (*path, key))
        return result

    def _sequence(self, node: yaml.SequenceNode, path: Loc) -> list[Any]:
        items = []
        for index, item in enumerate(node.value):
            self.lines[(*path, index)] = item.start_mark.line + 1
            items.append(self.construct(item, (*path, index)))
        return items
