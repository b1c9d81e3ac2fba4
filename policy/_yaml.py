"""Read a YAML document keeping the line of every node, so policy errors can point at it.

PyYAML's composer gives a node tree with marks; we convert it ourselves into `Node` values that
carry their 1-based line. Only safe YAML is read (no Python tags), and duplicate keys are an
error rather than a silent overwrite, because a custodian who writes a key twice meant one of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bedside.errors import PolicyError


@dataclass
class Node:
    """One YAML value with the line it starts on.

    `value` is a plain Python value for scalars, a list of `Node` for sequences and a dict of
    key -> `Node` for mappings. `key_lines` gives the line of each mapping key.
    """

    value: Any
    line: int
    kind: str  # "scalar" | "sequence" | "mapping"
    key_lines: dict[str, int] = field(default_factory=dict)

    def plain(self) -> Any:
        """The value with all nested nodes turned into plain Python values."""
        if self.kind == "mapping":
            return {k: v.plain() for k, v in self.value.items()}
        if self.kind == "sequence":
            return [v.plain() for v in self.value]
        return self.value


def read_yaml(path: Path) -> Node:
    """Parse `path` into a `Node` tree; raise PolicyError naming file and line on bad YAML."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(
            "policy file not found", path=str(path), fix="check the path you gave"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(
            f"cannot read policy file ({type(exc).__name__})",
            path=str(path),
            fix="the policy must be a readable UTF-8 text file",
        ) from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, where: str) -> Node:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.context_mark is not None and exc.problem_mark is not None:
            started = exc.context_mark.line + 1
            if started != line:
                problem += f" ({exc.context} on line {started})"
        raise PolicyError(
            f"invalid YAML: {problem}",
            path=where,
            line=line,
            fix="check indentation, colons after keys and matching brackets/quotes",
        ) from None
    except yaml.YAMLError as exc:
        raise PolicyError(
            f"invalid YAML ({type(exc).__name__})", path=where, fix="check the YAML syntax"
        ) from None
    if root is None:
        raise PolicyError(
            "the policy file is empty",
            path=where,
            line=1,
            fix="start from the minimal policy in docs/custodian/policy.md",
        )
    constructor = yaml.SafeLoader("")
    return _convert(root, constructor, where)


def _convert(node: yaml.Node, constructor: yaml.SafeLoader, where: str) -> Node:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        items: dict[str, Node] = {}
        key_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise PolicyError(
                    "a mapping key must be a plain name",
                    path=where,
                    line=key_line,
                    fix="write keys as simple words, e.g. `min_cell_count: 10`",
                )
            key = str(constructor.construct_object(key_node, deep=True))
            if key == "<<":
                raise PolicyError(
                    "YAML merge keys (<<) are not supported in policies",
                    path=where,
                    line=key_line,
                    fix="write the keys out in full so the policy reads on its own",
                )
            if key in items:
                raise PolicyError(
                    f"key '{key}' appears twice (first on line {key_lines[key]})",
                    path=where,
                    line=key_line,
                    fix=f"keep one '{key}' entry",
                )
            items[key] = _convert(value_node, constructor, where)
            key_lines[key] = key_line
        return Node(items, line, "mapping", key_lines)
    if isinstance(node, yaml.SequenceNode):
        return Node([_convert(v, constructor, where) for v in node.value], line, "sequence")
    try:
        value = constructor.construct_object(node, deep=True)
    except yaml.YAMLError:
        raise PolicyError(
            "a value uses a YAML tag that policies do not allow",
            path=where,
            line=line,
            fix="write plain strings, numbers, booleans, lists and mappings only",
        ) from None
    return Node(value, line, "scalar")
