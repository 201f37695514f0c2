"""`detkit demo`: train and evaluate a detector on the packaged raccoon photos."""
from __future__ import annotations

import click

from detkit.cli.common import tensorflow

# Lazy imports: `detkit --help` loads every command module, so the library behind a command (TensorFlow, for
# most) is imported when the command runs.


@click.command("demo")
@click.option("--output", "output_dir", default="detkit-demo", show_default=True, type=click.Path(file_okay=False),
              help="Directory for everything the demo writes (nothing is written elsewhere).")
@click.option("--minutes", default=8.0, show_default=True, type=float,
              help="Training time; more minutes, better detector.")
@click.option("-o", "--override", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a value of the demo's recipe config (repeatable).")
def demo(output_dir: str, minutes: float, overrides: tuple[str, ...]) -> None:
    """Transform, train, evaluate and predict on the raccoon photos shipped with detkit."""
    tensorflow()
    from detkit.demo import run_demo

    result = run_demo(output_dir, minutes, overrides)
    click.echo(f"AP50 {result.metrics['map50']:.3f} (fixed-box baseline {result.metrics['baseline_map50']:.3f}); "
               f"results in {result.output_dir}")
