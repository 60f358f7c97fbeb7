"""Runs a command in a pseudo-terminal, as a person at a terminal would, for the client tests.

usage: pty_run.py TRANSCRIPT [--step|--secret-step TEXT=>KEYS ...] -- COMMAND [ARG ...]

The command gets a new session whose controlling terminal is the pty (stdin, stdout and
stderr all on it, 100 columns), so Ctrl-C typed as the byte 0x03 reaches it as SIGINT through
the terminal's line discipline, exactly as from a keyboard. Each step waits until TEXT has
appeared in the output (after the previous step's) and then types KEYS (Python escapes:
\\x03 is Ctrl-C, \\n is Enter); a secret step also waits until the terminal's echo is off.
Everything the command wrote, escape codes included, goes to TRANSCRIPT. Exits with the
command's exit code (128 + N if signal N ended it), or 124 if it did not end within 120 s.
"""

import codecs
import fcntl
import os
import pty
import select
import signal
import struct
import sys
import termios
import time

TIMEOUT_SECONDS = 120


def main() -> int:
    args = sys.argv[1:]
    transcript_path = args.pop(0)
    steps = []
    while args and args[0] in ("--step", "--secret-step"):
        text, keys = args[1].split("=>", 1)
        keys = codecs.decode(keys, "unicode_escape").encode("latin-1")
        steps.append((text.encode(), keys, args[0] == "--secret-step"))
        args = args[2:]
    if not args or args[0] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    command = args[1:]

    pid, master = pty.fork()
    if pid == 0:
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))

    output = b""
    searched_from = 0
    deadline = time.monotonic() + TIMEOUT_SECONDS
    timed_out = False
    while True:
        if time.monotonic() > deadline:
            timed_out = True
            os.kill(pid, signal.SIGKILL)
            break
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every process holding the terminal has closed it
                break
            if not chunk:
                break
            output += chunk
        if steps:
            at = output.find(steps[0][0], searched_from)
            # On Linux the master reports the terminal's settings: echo off = a secret prompt.
            echo_off = not termios.tcgetattr(master)[3] & termios.ECHO
            if at >= 0 and (echo_off or not steps[0][2]):
                searched_from = at + len(steps[0][0])
                os.write(master, steps.pop(0)[1])
    _, status = os.waitpid(pid, 0)
    with open(transcript_path, "wb") as transcript:
        transcript.write(output)
    if timed_out:
        return 124
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
