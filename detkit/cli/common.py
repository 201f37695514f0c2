"""Options and helpers shared by every CLI command."""
from __future__ import annotations

import dataclasses
import json
from typing import Callable, Optional, Sequence

import click

from detkit.config import Config, load_config

# Lazy imports: `detkit --help` loads every command module, so the library behind a command (TensorFlow, for
# most) is imported when the command runs.


def config_options(func: Callable) -> Callable:
    """Add -c/--config (repeatable) and -o/--override (repeatable) to a command."""
    func = click.option(
        "-o", "--override", "overrides", multiple=True, metavar="KEY=VALUE",
        help="Override a config value, e.g. -o train.batch_size=2 (value parsed as YAML; repeatable).",
    )(func)
    func = click.option(
        "-c", "--config", "config_files", multiple=True, type=click.Path(dir_okay=False),
        help="YAML config file merged over the defaults (repeatable; later wins).",
    )(func)
    return func


def build_config(config_files: tuple[str, ...], overrides: tuple[str, ...]) -> Config:
    """Load and validate the config once, for a command to pass down."""
    return load_config(config_files, overrides)


def run_overrides(config_files: Sequence[str], overrides: Sequence[str], section: str,
                  keep_dataset_dir: bool = False) -> list[str]:
    """Overrides applying a -c file's `section` (and dataset.dir if asked) to a run's saved config, then -o."""
    out: list[str] = []
    if config_files:
        cfg = build_config(tuple(config_files), tuple(overrides))
        values = getattr(cfg, section)
        for f in dataclasses.fields(values):
            out.append(f"{section}.{f.name}={json.dumps(getattr(values, f.name))}")
        if keep_dataset_dir and cfg.dataset.dir:
            out.append(f"dataset.dir={json.dumps(cfg.dataset.dir)}")
    return out + list(overrides)


def is_verbose(ctx: click.Context | None = None) -> bool:
    """Whether the top-level --verbose flag was given."""
    ctx = ctx or click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().obj and ctx.find_root().obj.get("verbose"))


def tensorflow(ctx: click.Context | None = None):
    """Import TensorFlow quietly unless the top-level --verbose flag was given."""
    from detkit.utils.tf_quiet import import_tensorflow

    return import_tensorflow(is_verbose(ctx))


def checkpoint_or_default(checkpoint: Optional[str], config_files: Sequence[str]) -> Optional[str]:
    """--checkpoint as given; with neither it nor -c, the default downloaded model (named on stderr)."""
    if checkpoint or config_files:
        return checkpoint
    from detkit.pretrained.zoo import default_model

    name, run_dir = default_model()
    echo_err(f"detkit: using the downloaded model {name} ({run_dir})")
    return run_dir


def echo_err(message: str) -> None:
    """A log line on stderr."""
    click.echo(message, err=True)
