"""The `synscale` command line: `main` parses the arguments (synscale.cli.parser), runs the command
(synscale.cli.commands) and is the one place user errors are caught."""

from __future__ import annotations

import argparse
import os
import sys

from synscale.cli.commands import COMMANDS
from synscale.cli.parser import Parser, build_parser, check_flags

__all__ = ["COMMANDS", "Parser", "build_parser", "check_flags", "main"]


def main(argv: list[str] | None = None) -> int:
    """The one boundary of user errors: a UserError (raised wherever input is judged, flags included) is one
    line and exit 2; an OSError a user can act on is one line; anything else is a bug and keeps its traceback."""
    import signal

    from synscale.errors import UserError, clear_interrupts, interrupt, interrupted, os_error_line

    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or os.environ.get("SYNSCALE_DEBUG", "") not in ("", "0")
    clear_interrupts()
    before = signal.signal(signal.SIGTERM, interrupt)  # SIGTERM ends like Ctrl-C: one line, resumable
    before_int = signal.getsignal(signal.SIGINT)
    ours = before_int not in (signal.SIG_IGN, None)  # Ctrl-C, recorded; not where a shell's background job ignores it
    if ours:
        signal.signal(signal.SIGINT, interrupt)
    args = argparse.Namespace(command="")
    try:
        args = build_parser().parse_args(argv)
        check_flags(args)
        code = COMMANDS[args.command](args)
        if interrupted():  # a signal whose KeyboardInterrupt Python could not raise (errors.interrupt)
            raise KeyboardInterrupt
        return code
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\nsynscale: interrupted; {_RESUME.get(args.command, 'nothing half-written is kept as complete')}",
              file=sys.stderr)
        return 130
    except (UserError, FileNotFoundError) as e:
        if debug:
            raise
        line = os_error_line(e) if isinstance(e, OSError) and e.errno is not None else str(e)
        print(f"synscale: error: {line}", file=sys.stderr)
        return 2
    except OSError as e:  # a path that cannot be written (permissions, a file in the way, a full disk)
        if debug:
            raise
        print(f"synscale: error: {os_error_line(e)}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, before)
        if ours:
            signal.signal(signal.SIGINT, before_int)


_RESUME = {c: "complete stages are kept: rerun the same command to resume" for c in ("demo", "study", "metrics")} | {
    "generate": "finished shards are kept: rerun the same command to resume",
    "train": "the newest checkpoint is kept: rerun the same command to resume",
}


if __name__ == "__main__":
    raise SystemExit(main())
