"""The artifact folder: written complete or not at all, with a manifest that checksums every file.

Everything is built in a hidden temporary folder beside the destination and renamed into place, so a crash
or Ctrl-C never leaves a half-written folder under the user's name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from .errors import UserError

MANIFEST = "manifest.json"
LIBRARY = "model.so"
LATENCY_JSON = "latency.json"
LATENCY_CSV = "latency.csv"
TUNING_CURVE = "tuning_curve.png"  # when the compile tuned


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "w") -> Iterator[IO]:
    """Write `path` through a temporary file beside it, renamed over it only once complete (and synced)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.resolve().parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_destination(outdir: Path, force: bool) -> None:
    """Fail early, before any work, when the destination exists and may not be replaced."""
    if outdir.exists() and not force:
        raise UserError(f"output folder {outdir} already exists; pass --force to replace it or choose another -o")
    if outdir.exists() and not outdir.is_dir():
        raise UserError(f"output path {outdir} exists and is not a folder; remove it or choose another -o")
    ancestor = outdir.resolve().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"cannot create {outdir}: {ancestor} is a file; choose another -o")


def _staging_prefix(outdir: Path, kind: str) -> str:
    """Hidden siblings of `outdir` carry the writer's pid, so a later writer can tell whose they are."""
    return f".{outdir.name}.{kind}-{os.getpid()}-"


def _writer_alive(folder: Path, prefix: str) -> bool:
    try:
        os.kill(int(folder.name[len(prefix):].split("-")[0]), 0)
    except (ProcessLookupError, ValueError):  # ValueError: no pid in the name (an older edgetune's folder)
        return False
    except PermissionError:  # another user's process
        pass
    return True


def sweep_stale(outdir: Path) -> None:
    """Remove what a writer killed with SIGKILL left beside `outdir`: its staging folder, and put back the
    previous artifact that `publish()` had moved aside when the kill came between its two renames."""
    outdir = Path(outdir)
    parent = outdir.resolve().parent
    if not parent.is_dir():
        return
    for kind in ("old", "tmp"):  # "old" first: a moved-aside artifact is restored before anything is removed
        prefix = f".{outdir.name}.{kind}-"
        for folder in parent.iterdir():
            if not folder.name.startswith(prefix) or _writer_alive(folder, prefix):
                continue
            if kind == "old" and not outdir.exists():
                os.replace(folder, outdir)
            else:
                shutil.rmtree(folder, ignore_errors=True)


class StagedFolder:
    """A temporary folder that becomes `outdir` on `publish()`, or vanishes on error (or, after SIGKILL, at the
    next write of the same `outdir`)."""

    def __init__(self, outdir: Path):
        self.outdir = Path(outdir)
        parent = self.outdir.resolve().parent
        parent.mkdir(parents=True, exist_ok=True)  # like `mkdir -p`: only the folders above the artifact
        sweep_stale(self.outdir)
        self.path = Path(tempfile.mkdtemp(prefix=_staging_prefix(self.outdir, "tmp"), dir=parent))

    def __enter__(self) -> "StagedFolder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)

    def write_text(self, name: str, text: str) -> None:
        with open(self.path / name, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def write_json(self, name: str, data: Any) -> None:
        self.write_text(name, json.dumps(data, indent=2, sort_keys=False) + "\n")

    def publish(self, manifest: dict[str, Any]) -> Path:
        """Checksum every file into the manifest, write it last, then swap the folder into place."""
        files = sorted(p for p in self.path.iterdir() if p.is_file() and p.name != MANIFEST)
        manifest = dict(manifest)
        manifest["files"] = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files}
        self.write_json(MANIFEST, manifest)
        os.chmod(self.path, 0o755)  # mkdtemp makes it 0700
        old = None
        if self.outdir.exists():
            old = Path(tempfile.mkdtemp(prefix=_staging_prefix(self.outdir, "old"), dir=self.outdir.resolve().parent))
            os.rmdir(old)
            os.replace(self.outdir, old)
        os.replace(self.path, self.outdir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.outdir


def read_manifest(outdir: Path) -> dict[str, Any]:
    path = Path(outdir) / MANIFEST
    if not Path(outdir).is_dir():
        raise UserError(f"{outdir} is not an edgetune artifact folder (it does not exist); run `edgetune compile` "
                        "first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{outdir} has no {MANIFEST}; it is not an edgetune artifact folder") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is damaged ({exc}); compile the model again") from None


def verify_files(outdir: Path, manifest: dict[str, Any]) -> None:
    """Refuse an artifact whose files differ from what the manifest recorded (it would run native code)."""
    for name, entry in manifest.get("files", {}).items():
        path = Path(outdir) / name
        if not path.is_file():
            raise UserError(f"{path} is missing; compile the model again")
        if sha256_file(path) != entry["sha256"]:
            raise UserError(f"{path} does not match the checksum in {MANIFEST}; refusing to load it (recompile, "
                            "or restore the original file)")
    if LIBRARY not in manifest.get("files", {}):
        raise UserError(f"{outdir}/{MANIFEST} lists no {LIBRARY}; compile the model again")
