"""Entry point of the `detkit` command: a click group and one-line error reporting."""
from __future__ import annotations

import importlib
import sys
import traceback

import click

from detkit.version import __version__
from detkit.cli.config_cmd import config_group
from detkit.errors import DetkitError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="detkit")
@click.option("-v", "--verbose", is_flag=True, help="Show TensorFlow's logs and full tracebacks.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """detkit: train and use Faster R-CNN object detectors (TensorFlow 2 / Keras 3)."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose


cli.add_command(config_group)


def _register_commands() -> None:
    """Attach the command groups; their modules import TensorFlow only when run."""
    for module, attr in [
        ("detkit.cli.dataset", "dataset_group"),
        ("detkit.cli.train", "train"),
        ("detkit.cli.predict", "predict"),
        ("detkit.cli.eval", "evaluate"),
        ("detkit.cli.checkpoint", "checkpoint_group"),
        ("detkit.cli.demo", "demo"),
        ("detkit.cli.server", "server_group"),
    ]:
        cli.add_command(getattr(importlib.import_module(module), attr))


_register_commands()


def main() -> None:
    """Run the CLI; DetkitError becomes one line on stderr and its exit code."""
    verbose = "-v" in sys.argv[1:2] or "--verbose" in sys.argv[1:2]
    try:
        cli.main(standalone_mode=False, prog_name="detkit")
    except click.exceptions.Abort as exc:
        click.echo("detkit: aborted", err=True)
        # click turns KeyboardInterrupt into Abort; errors.Terminated (SIGTERM) keeps its own code, 143.
        sys.exit(getattr(exc.__cause__, "exit_code", 130))
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except DetkitError as exc:
        if verbose:
            traceback.print_exc()
        click.echo(f"detkit: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        # A file detkit could not read or write that no command anticipated: still one line naming it.
        if verbose:
            traceback.print_exc()
        where = f"{exc.filename}: " if exc.filename else ""
        hint = "" if verbose else " (run with --verbose for the traceback)"
        click.echo(f"detkit: error: {where}{exc.strerror or exc}{hint}", err=True)
        sys.exit(1)
    except KeyboardInterrupt as exc:
        click.echo("detkit: interrupted", err=True)
        sys.exit(getattr(exc, "exit_code", 130))  # 143 after SIGTERM (errors.Terminated)
    except Exception as exc:  # a failure no command anticipated (a bug, or TensorFlow refusing a graph)
        if verbose:
            traceback.print_exc()
        hint = "" if verbose else "; run with --verbose for the traceback"
        click.echo(f"detkit: error: unexpected {type(exc).__name__}: {_summary(exc)}{hint}", err=True)
        sys.exit(1)


def _summary(exc: Exception) -> str:
    """One line of an exception's message: TensorFlow puts the cause last, after the graph's call stack."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return "(no message)"
    line = lines[-1] if type(exc).__module__.startswith("tensorflow") else lines[0]
    return line if len(line) <= 300 else line[:297] + "..."


if __name__ == "__main__":
    main()
