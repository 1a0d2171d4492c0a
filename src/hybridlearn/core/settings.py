"""Settings: every config key is declared once, in a dataclass field that holds its type, its default,
its range and one line of help (Hydra structured configs). Each package registers its dataclasses in
Hydra's ConfigStore as the options of its config groups (`model=lenet5` is `LeNet5Config`):

    @dataclass
    class LeNet5Config:
        lr: float = setting(0.002, gt=0, help="Adam's learning rate")
        activation: str = setting("relu", choices=["relu", "tanh", "sigmoid"])

OmegaConf checks the types while Hydra composes (`data.batch_size=2.5` or `print_config=maybe` is
refused there); `check_settings` then checks what a type cannot say (ranges, choices, finite numbers,
keys added with `+` that are no setting), and each dataclass's `rules(node, path)` the rules between
its keys. All of it runs before torch is imported, so a bad value costs about a second.

Packages are found through the `hybridlearn.settings` entry points (pyproject.toml), so an experiment
of another distribution registers its settings the same way; groups given as plain YAML files (a
user's own experiment) are composed as before, without range checks.
"""

import copy
import dataclasses
import difflib
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import field
from importlib.metadata import entry_points
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from hybridlearn.core.errors import ConfigError

ENTRY_POINTS = "hybridlearn.settings"
_META = "hybridlearn"  # the key of a field's metadata this module reads
SEED_MAX = 2**32 - 1  # numpy's seeds are 32-bit


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str = "",
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Sequence[Any] | None = None,
    check: Callable[[Any], str | None] | None = None,
) -> Any:
    """A dataclass field: `default` (lists and dicts copied per instance), the bounds a number must keep
    (ge >=, gt >, le <=, lt <), the values a choice may take, or `check(value) -> problem or None` for a
    value a type cannot describe (an int or "auto"). `None` always passes the range checks (Optional)."""
    meta = {_META: dict(help=help, ge=ge, gt=gt, le=le, lt=lt, choices=None if choices is None else tuple(choices))}
    if check is not None:
        meta[_META]["check"] = check
    if isinstance(default, (list, dict)) or (dataclasses.is_dataclass(default) and not isinstance(default, type)):
        return field(default_factory=functools.partial(copy.deepcopy, default), metadata=meta)
    return field(default=default, metadata=meta)


def help_of(f: dataclasses.Field) -> str:
    return f.metadata.get(_META, {}).get("help", "")


def register(group: str | None, name: str, node: Any, package: str | None = None) -> None:
    """Make `node` (a dataclass, or a dict holding dataclasses) the option `name` of config `group`."""
    ConfigStore.instance().store(group=group, name=name, node=node, package=package)


@functools.cache
def load_settings() -> list[str]:
    """Call every registered package's `register()` (entry point group `hybridlearn.settings`), once;
    returns their names. Light modules: dataclasses only, no torch."""
    names = []
    for ep in sorted(entry_points(group=ENTRY_POINTS), key=lambda e: e.name):
        ep.load()()
        names.append(ep.name)
    return names


def group_options(group: str) -> list[str]:
    """The options of a config group registered in the ConfigStore (YAML files are listed by the caller)."""
    node: Any = ConfigStore.instance().repo
    for part in group.split("/"):
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return []
    return sorted(k.removesuffix(".yaml") for k, v in node.items() if k.endswith(".yaml"))


# ------------------------------------------------------------------------------------ checking
def _bounds(meta: Mapping[str, Any]) -> str:
    said = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return " and ".join(f"{said[k]} {meta[k]}" for k in said if meta.get(k) is not None)


def check_value(path: str, value: Any, meta: Mapping[str, Any]) -> None:
    """One setting against its declaration (see `setting`); ConfigError naming `path`."""
    if value is None:
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        shown = ", ".join("null" if c is None else str(c) for c in choices)
        raise ConfigError(f"{path} must be one of {shown} (got {value!r})")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = value
        bad = (
            (meta.get("ge") is not None and v < meta["ge"])
            or (meta.get("gt") is not None and v <= meta["gt"])
            or (meta.get("le") is not None and v > meta["le"])
            or (meta.get("lt") is not None and v >= meta["lt"])
        )
        if bad:
            raise ConfigError(f"{path} must be {_bounds(meta)} (got {value})")
    check = meta.get("check")
    problem = check(value) if check is not None else None
    if problem:
        raise ConfigError(f"{path} {problem} (got {value!r})")


_SKIP = object()  # a value that needs the running job (`${hydra:...}`): not resolvable while composing


def _child(node: DictConfig | ListConfig, key: Any, path: str) -> Any:
    """node[key], or _SKIP; `???` is an error naming `path`."""
    try:
        return node[key]
    except MissingMandatoryValue:
        raise ConfigError(f"{path} is required (`???`); set it on the command line") from None
    except InterpolationResolutionError:
        return _SKIP


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}[{key}]" if isinstance(key, int) else f"{prefix}.{key}" if prefix else str(key)


def check_settings(node: Any, path: str = "", root: Any = None) -> None:
    """Check a composed config (or a part of it, `path` its dotted name, `root` the whole config): every
    number finite; every node built from a dataclass against its fields (unknown keys, ranges, choices)
    and its `rules(node, path, root)`. Raises ConfigError naming the first bad key."""
    root = node if root is None else root
    if isinstance(node, DictConfig):
        schema = OmegaConf.get_type(node)
        fields = {f.name: f for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
        for key in node.keys():
            if not path and key == "hydra":
                continue  # Hydra's own node, checked by Hydra
            sub = _join(path, key)
            if fields is not None and key not in fields:
                close = difflib.get_close_matches(str(key), list(fields), n=3, cutoff=0.6)
                hint = f"did you mean {' or '.join(close)}?" if close else "`--cfg job` lists the settings"
                raise ConfigError(f"{sub} is not a setting of {path or 'the run'} ({schema.__name__}); {hint}")
            value = _child(node, key, sub)
            if value is _SKIP:
                continue
            if fields is not None:
                check_value(sub, value, fields[key].metadata.get(_META, {}))
            check_settings(value, sub, root)
        rules = getattr(schema, "rules", None)
        if fields is not None and callable(rules):
            rules(node, path, root)
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            value = _child(node, i, _join(path, i))
            if value is not _SKIP:
                check_settings(value, _join(path, i), root)
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{path} must be a finite number (got {node})")


def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A plain nested dict as {dotted key: leaf}; lists and other values are leaves."""
    if isinstance(tree, Mapping) and tree:
        return {k: v for key, sub in tree.items() for k, v in flat(sub, _join(prefix, key)).items()}
    return {prefix: tree}


def declared_defaults(node: Any, path: str = "") -> dict[str, Any]:
    """{dotted key: the default its dataclass declares} for every setting under a composed config's
    nodes that were built from dataclasses (unresolved, as the config holds them)."""
    out: dict[str, Any] = {}
    if not isinstance(node, DictConfig):
        return out
    schema = OmegaConf.get_type(node)
    if dataclasses.is_dataclass(schema):
        for f in dataclasses.fields(schema):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                continue
            if dataclasses.is_dataclass(default):
                default = OmegaConf.to_container(OmegaConf.structured(default), resolve=False)
            out.update(flat(default, _join(path, f.name)))
    for key in node.keys():
        if path or key != "hydra":
            try:
                child = _child(node, key, _join(path, key))
            except ConfigError:  # `???`: no default to find under it
                continue
            out.update(declared_defaults(child, _join(path, key)))  # a node's own type has the last word
    return out


# ------------------------------------------------------------------------ checks a type cannot say
def positive_int_or(*words: str) -> Callable[[Any], str | None]:
    """`check=` of a setting that is a positive int or one of `words` (e.g. devices: 2 or "auto")."""

    def check(v: Any) -> str | None:
        if isinstance(v, int) and not isinstance(v, bool) and v >= 1 or v in words:
            return None
        return f"must be a positive integer{''.join(f' or {w}' for w in words)}"

    return check
