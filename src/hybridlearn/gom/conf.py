"""The gom experiments' settings (core.settings): each config group option as a dataclass that holds
every key's type, default, range and help; registered through the `hybridlearn.settings` entry point."""


def register() -> None:
    """Store this package's config group options in Hydra's ConfigStore (none yet: its YAML files)."""
