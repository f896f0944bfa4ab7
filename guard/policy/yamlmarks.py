"""Load YAML while remembering the line of every key and list item, so that a validation error at
``categories.S99.action`` can be reported as ``file.yaml:12: ...``. Duplicate keys, which PyYAML
silently lets the last one win, are an error here."""

from __future__ import annotations

from typing import Any

import yaml

Loc = tuple[str | int, ...]


class YamlIssue(Exception):
    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def load_marked(text: str) -> tuple[Any, dict[Loc, int]]:
    """(value, lines): ``lines`` maps each key path (and list index path) to its 1-based line;
    ``()`` maps to the document's first line."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {(): 1}
        lines: dict[Loc, int] = {(): node.start_mark.line + 1}
        return _construct(loader, node, (), lines), lines
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
    finally:
        loader.dispose()


def _construct(loader: yaml.SafeLoader, node: yaml.Node, path: Loc, lines: dict[Loc, int]) -> Any:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # `<<: *anchor` merge keys
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise YamlIssue(line, f"unsupported mapping key {key!r}")
            if key in result:
                raise YamlIssue(line, f"duplicate key {key!r}")
            lines[(*path, key)] = line
            result[key] = _construct(loader, value_node, (*path, key), lines)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            items.append(_construct(loader, item, (*path, index), lines))
        return items
    return loader.construct_object(node, deep=True)
