"""Path confinement: a path read from a file (a CSV/JSON list, a manifest, a request) must
resolve, symlinks followed, inside one of the allowed roots."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class PathEscape(ValueError):
    """A path points outside every allowed root (``..`` or a symlink out). ``problem`` is the
    message without its fix, for callers that name a fix of their own."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}; {fix}")
        self.problem = problem


def confine(path: Path | str, roots: Iterable[Path | str], what: str = "path") -> Path:
    """``path`` resolved (symlinks followed); raises ``PathEscape`` if it leaves ``roots``."""
    resolved = Path(path).expanduser().resolve()
    allowed = [Path(r).expanduser().resolve() for r in roots]
    if any(resolved == r or resolved.is_relative_to(r) for r in allowed):
        return resolved
    raise PathEscape(
        f"{what} {path} resolves to {resolved}, outside the allowed roots {[str(r) for r in allowed]}",
        "move the file inside one of them or add its folder to VAE3D_ALLOWED_ROOTS",
    )
