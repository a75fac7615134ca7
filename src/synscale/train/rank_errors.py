"""A rank of a multi-process run (torchrun's or Ray Train's) that stops on a user error leaves its one line beside
the spec; the launcher raises it where the run was started, instead of the launcher's own report of a failed
child."""

from __future__ import annotations

from pathlib import Path


def rank_error(spec_path: Path, rank: int) -> Path:
    """Where rank `rank` of a run of the spec at `spec_path` leaves the user error it stopped on."""
    return spec_path.with_name(f"{spec_path.name}.error-{rank}")


def clear_rank_errors(spec_path: Path, world: int) -> None:
    """Remove what an earlier run of this spec left."""
    for r in range(world):
        rank_error(spec_path, r).unlink(missing_ok=True)


def raise_rank_errors(spec_path: Path, world: int) -> None:
    """Raise (as a UserError) the first rank's error line, if any rank left one; the lines are removed."""
    errors = [rank_error(spec_path, r) for r in range(world) if rank_error(spec_path, r).exists()]
    if errors:
        from synscale.errors import UserError

        message = errors[0].read_text()
        for e in errors:
            e.unlink()
        raise UserError(message)
