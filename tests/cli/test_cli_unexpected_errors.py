"""A failure no command anticipated is still one line (the traceback only with --verbose)."""
import pytest

from detkit.cli import main as cli_main


@pytest.fixture
def failing_command():
    @cli_main.cli.command("explode")
    def explode() -> None:
        raise RuntimeError("first line of the message\nsecond line")

    yield
    cli_main.cli.commands.pop("explode")


def test_unexpected_exception_is_one_line(failing_command, run_detkit):
    code, _, err = run_detkit("explode")
    assert code == 1
    assert err.strip().splitlines() == [
        "detkit: error: unexpected RuntimeError: first line of the message; run with --verbose for the traceback"]


def test_verbose_shows_the_traceback_too(failing_command, run_detkit):
    code, _, err = run_detkit("--verbose", "explode")
    assert code == 1
    assert "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1] == "detkit: error: unexpected RuntimeError: first line of the message"


def test_tensorflow_errors_are_summarised_by_their_last_line():
    import tensorflow as tf

    exc = tf.errors.InvalidArgumentError(None, None, "Graph execution error:\n\nDetected at node 'x':\n"
                                                     "  File \"a.py\", line 1\n\ttf2xla conversion failed")
    assert cli_main._summary(exc) == "tf2xla conversion failed"
    assert cli_main._summary(ValueError("")) == "(no message)"
