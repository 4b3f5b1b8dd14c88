"""A stack's Compose model the way ``docker compose config`` builds it: ``extends`` resolved with the
spec's merge rules (compose-spec 13-merge.md), then ``${VAR}`` interpolated from an environment.

No Docker engine runs the tests, so this does what Compose does to the files before it starts anything;
the result is validated by compose-spec's parser like every file on its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import compose_spec
import yaml

#: Replaced, not appended, when merged.
REPLACED = {"command", "entrypoint", "test"}
#: Sequences of unique entries, merged by their key (the container path, the source name).
UNIQUE = {"volumes", "ports", "secrets", "configs"}
#: Written as a list or a mapping; merged as mappings.
MAPPINGS = {"environment", "networks", "depends_on", "labels"}
VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?)([-?])([^}]*))?\}|\$(\w+)")


class MissingVariable(ValueError):
    """A ``${VAR:?message}`` whose variable is unset or empty: Compose refuses to start."""


def parse(path: Path) -> dict[str, Any]:
    """The file as YAML, after compose-spec's parser accepted it (it raises on anything the spec rejects)."""
    text = path.read_text()
    compose_spec.PyCompose.from_yaml(text).validate()
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def _as_mapping(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    if key == "environment":
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in value)
    return {item: None for item in value}


def _unique_key(entry: Any) -> Any:
    if isinstance(entry, Mapping):
        return entry.get("target") or entry.get("source")
    parts = str(entry).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def merge(base: Any, override: Any, key: str = "") -> Any:
    """``override`` on top of ``base``: mappings merge, sequences append, shell commands replace."""
    if key in MAPPINGS and base is not None and override is not None:
        return merge(_as_mapping(key, base), _as_mapping(key, override))
    if isinstance(base, Mapping) and isinstance(override, Mapping):
        merged = dict(base)
        for name, value in override.items():
            merged[name] = merge(base[name], value, name) if name in base else value
        return merged
    if key in UNIQUE and isinstance(base, list) and isinstance(override, list):
        entries = {_unique_key(entry): entry for entry in base}
        entries.update({_unique_key(entry): entry for entry in override})
        return list(entries.values())
    if key not in REPLACED and isinstance(base, list) and isinstance(override, list):
        return base + [entry for entry in override if entry not in base]
    return override


def resolve_service(path: Path, name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Service ``name`` of ``path`` with its ``extends`` chain merged in (the base first)."""
    where = f"{path.name}:{name}"
    if where in seen:
        raise ValueError(f"circular extends: {' -> '.join((*seen, where))}")
    service = dict(parse(path)["services"][name])
    extends = service.pop("extends", None)
    if extends is None:
        return service
    base_path = path.parent / extends["file"] if "file" in extends else path
    if base_path.parent != path.parent:
        raise ValueError(f"{where} extends a file in another folder: its relative paths would move")
    return dict(merge(resolve_service(base_path, extends["service"], (*seen, where)), service))


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}`` (and the forms without ``:``), ``$$``."""
    if isinstance(value, Mapping):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(5)
        colon, kind, word = match.group(2), match.group(3), match.group(4)
        current = env.get(name)
        missing = current is None or (colon == ":" and current == "")
        if kind == "?" and missing:
            raise MissingVariable(f"{name}: {word}")
        if kind == "-" and missing:
            return interpolate(word, env)  # type: ignore[no-any-return]
        return current or ""

    return VARIABLE.sub(substitute, value)


def load_stack(path: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """The merged, interpolated model of one stack file, validated by compose-spec."""
    data = parse(path)
    data["services"] = {name: resolve_service(path, name) for name in data["services"]}
    model: dict[str, Any] = interpolate(data, env)
    compose_spec.PyCompose.from_yaml(yaml.safe_dump(model)).validate()
    return model
