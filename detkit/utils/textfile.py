"""Read a whole UTF-8 text file, with the line of a bad byte named when it is not UTF-8."""
from __future__ import annotations


class NotUTF8(ValueError):
    """A file that is not UTF-8 text; the message starts with "line N:"."""


def read_utf8(path: str) -> str:
    """The text of `path` (a BOM is dropped); OSError if it cannot be read, NotUTF8 naming the bad line."""
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise NotUTF8(f"line {line}: not UTF-8 text (byte {data[exc.start]:#04x}); save the file as UTF-8") from None
