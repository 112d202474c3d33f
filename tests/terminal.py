"""A pseudo-terminal for tests of what a terminal shows (the live trials table, Ctrl-C typed there), and the check
that no log line was written through the live table."""

from __future__ import annotations

import fcntl
import os
import re
import struct
import termios
import threading


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


class Terminal:
    """A pseudo-terminal: `.stream` writes to it (isatty() is True), `.text()` is what it showed."""

    def __init__(self, columns: int = 120, rows: int = 40) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.slave = slave
        self.stream = os.fdopen(slave, "w", buffering=1)
        self.chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.chunks.append(data)

    def raw(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def text(self) -> str:
        return ANSI.sub("", self.raw())

    def close(self) -> None:
        self.stream.close()
        self._reader.join(timeout=5)
        os.close(self.master)


LOG_LINE = re.compile(r"\d\d:\d\d:\d\d\.\d{3} \| ")


def lines_written_through_the_table(raw: str) -> list[str]:
    """Log lines (Prefect's `HH:MM:SS.mmm | `) written while the table was up without first erasing its lines:
    what garbles a live view (rich erases the table, prints the line, draws the table again below it)."""
    start, end = raw.find("\x1b[?25l"), raw.rfind("\x1b[?25h")
    garbled = []
    for line in raw[start:end].split("\n"):
        found = LOG_LINE.search(line)
        if found and "\x1b[2K" not in line[:found.start()]:
            garbled.append(ANSI.sub("", line))
    return garbled
