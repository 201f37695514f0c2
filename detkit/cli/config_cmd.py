"""`detkit config`: show the merged, validated config."""
from __future__ import annotations

import click

from detkit.cli.common import build_config, config_options

# Lazy imports: `detkit --help` loads every command module, so the library behind a command (TensorFlow, for
# most) is imported when the command runs.


@click.group("config")
def config_group() -> None:
    """Inspect the configuration schema."""


@config_group.command("show")
@config_options
def show(config_files: tuple[str, ...], overrides: tuple[str, ...]) -> None:
    """Print the merged, validated config as YAML."""
    from detkit.config import dump_yaml

    click.echo(dump_yaml(build_config(config_files, overrides)), nl=False)


@config_group.command("reference")
def reference() -> None:
    """Print the Markdown reference of every config key (docs/config.md)."""
    from detkit.config.reference import reference_markdown

    click.echo(reference_markdown(), nl=False)
