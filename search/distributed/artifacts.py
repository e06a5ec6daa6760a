"""Trial files and the study's teacher in an Optuna artifact store that every worker can reach.

The store is Optuna's: a ``FileSystemArtifactStore`` on a folder (``results/<study>/store`` on
one machine, a shared mount for several) or a ``Boto3ArtifactStore`` for ``s3://bucket``
(``pip install boto3``; credentials and ``AWS_ENDPOINT_URL`` come from the environment).
``upload_artifact`` records each file as the system attribute ``artifacts:<id>`` of its trial
or study; Optuna keeps neither a digest nor the store's location, so this module keeps both:

- study user attribute ``artifact_store``: ``file:///abs/path`` or ``s3://bucket``;
- trial user attribute ``files``: ``{filename: {artifact_id, sha256, bytes}}``, set after all
  uploads (a reader never sees half a set), checked again on download;
- study user attribute ``teacher``: the teacher's ``state_dict_sha256`` (names, dtypes, shapes
  and bytes, independent of how it was saved), its cache files, torch version and threads;
  ``data_sha256``: the task's data. A worker whose teacher or data differs is refused.

Files are uploaded before ``study.tell``: a finished trial's attributes cannot change.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import optuna

from search.core.hashing import sha256_file
from search.errors import SearchError, TaskError

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore

# Which files of a trial's folder other machines need (export, reproduce): the ONNX files and
# their external data, the torch program or checkpoint, the record. Not ONNX Runtime's
# optimized graph (model.opt.onnx, rebuilt on load) nor calibration caches (in sub-folders).
UPLOAD = ("*.onnx", "*.onnx.data", "*.pt2", "*.json")  # no pickles: a .pt could run code
SKIP = ("*.opt.onnx",)


class ArtifactError(SearchError):
    """The artifact store cannot be reached, or a file in it is missing or changed."""


def location(path_or_url: str) -> str:
    """The form a study records: an absolute ``file://`` URL, or ``s3://bucket``."""
    parsed = urlparse(path_or_url)
    if parsed.scheme == "s3":
        return path_or_url
    return Path(parsed.path if parsed.scheme == "file" else path_or_url).resolve().as_uri()


def open_store(where: str, *, create: bool = False) -> ArtifactStore:
    """Optuna's artifact store at ``where`` (a folder, ``file://`` URL or ``s3://bucket``).

    Raises:
        ArtifactError: the folder is missing (and not ``create``), or boto3 is missing.
    """
    parsed = urlparse(where)
    if parsed.scheme == "s3":
        try:
            import boto3
        except ImportError:
            raise ArtifactError(f"artifact store {where} needs boto3: pip install boto3") from None
        return optuna.artifacts.Boto3ArtifactStore(parsed.netloc, client=boto3.client("s3"))
    path = Path(parsed.path if parsed.scheme == "file" else where)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    if not path.is_dir():
        raise ArtifactError(
            f"artifact store {location(where)} is not a folder on this machine: mount the "
            "study's store at that path, or pass --artifacts with where it is mounted here"
        )
    return optuna.artifacts.FileSystemArtifactStore(path)


def study_store(study: optuna.Study, *, override: str | None, default: Path) -> ArtifactStore:
    """The store of ``study``: ``override`` (``--artifacts``, where this machine reaches it),
    else the one the study recorded. A study without one records ``override`` or ``default``
    now (creating the folder), so every later worker finds it; later workers never create a
    folder (a missing mount would otherwise fill a local one that no other machine sees)."""
    recorded = study.user_attrs.get("artifact_store")
    if recorded:
        return open_store(override or recorded)
    where = override or str(default)
    store = open_store(where, create=True)
    study.set_user_attr("artifact_store", location(where))
    return store


def _meta(artifact_id: str, path: Path) -> dict[str, Any]:
    return {"artifact_id": artifact_id, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def trial_files(folder: Path) -> list[Path]:
    """The files of a trial's folder that go to the store (:data:`UPLOAD` minus :data:`SKIP`)."""
    return sorted(
        p
        for p in Path(folder).iterdir()
        if p.is_file() and any(p.match(g) for g in UPLOAD) and not any(p.match(g) for g in SKIP)
    )


def upload_trial(trial: optuna.Trial, store: ArtifactStore, folder: Path) -> dict[str, Any]:
    """Upload a RUNNING trial's files (:func:`trial_files`); records and returns ``files``."""
    record = {}
    for path in trial_files(folder):
        artifact_id = optuna.artifacts.upload_artifact(
            artifact_store=store, file_path=str(path), study_or_trial=trial
        )
        record[path.name] = _meta(artifact_id, path)
    trial.set_user_attr("files", record)
    return record


def download(files: dict[str, Any], store: ArtifactStore, out_dir: Path) -> dict[str, Path]:
    """Download ``{name: {artifact_id, sha256}}`` into ``out_dir`` (names may hold folders),
    each checked by sha256 before it is moved into place.

    Raises:
        ArtifactError: a file is not in the store or differs from what was uploaded.
    """
    out_dir = Path(out_dir)
    for name in files:  # names come from the storage: never write outside out_dir
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ArtifactError(f"refusing artifact name {name!r}: not a plain relative path")
    out_dir.mkdir(parents=True, exist_ok=True)
    done: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".download-") as tmp:
        for name, meta in files.items():
            part = Path(tmp) / f"{len(done)}.part"
            try:
                optuna.artifacts.download_artifact(
                    artifact_store=store, file_path=str(part), artifact_id=meta["artifact_id"]
                )
            except optuna.artifacts.exceptions.ArtifactNotFound:
                raise ArtifactError(
                    f"{name} (artifact {meta['artifact_id']}) is not in the artifact store"
                ) from None
            if sha256_file(part) != meta["sha256"]:
                raise ArtifactError(f"{name} in the artifact store changed after it was uploaded")
            dest = out_dir / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, dest)
            done[name] = dest
    return done


def fetch_trial(
    study: optuna.Study,
    trial: optuna.trial.FrozenTrial,
    dest: Path,
    *,
    override: str | None = None,
) -> Path:
    """Download a trial's recorded ``files`` into ``dest`` from the study's store (or from
    ``override``, where this machine reaches it); returns ``dest``."""
    where = override or study.user_attrs.get("artifact_store")
    if not where:
        raise ArtifactError(f"study {study.study_name!r} records no artifact store; pass one")
    download(trial.user_attrs["files"], open_store(where), dest)
    return Path(dest)


# ------------------------------------------- the study's teacher and data: one of each per study


def publish_teacher(
    study: optuna.Study,
    store: ArtifactStore,
    *,
    digests: dict[str, str],
    files: dict[str, Path],
    cache_dir: Path,
    threads: int,
) -> None:
    """Upload the teacher's cache ``files`` (as study artifacts) and record its identity."""
    from importlib import metadata

    uploaded = {}
    for path in files.values():
        artifact_id = optuna.artifacts.upload_artifact(
            artifact_store=store, file_path=str(path), study_or_trial=study
        )
        name = str(Path(path).resolve().relative_to(Path(cache_dir).resolve()))
        uploaded[name] = _meta(artifact_id, Path(path))
    study.set_user_attr(
        "teacher",
        {
            "state_dict_sha256": digests["teacher"],
            "files": uploaded,
            "torch": metadata.version("torch"),
            "threads": threads,
            "host": socket.gethostname(),
        },
    )
    study.set_user_attr("data_sha256", digests["data"])


def fetch_teacher(study: optuna.Study, store: ArtifactStore, cache_dir: Path) -> list[Path]:
    """Download the study's teacher cache files that ``cache_dir`` lacks, so the task loads the
    study's teacher instead of training its own. A file already there is left as it is (the
    digest check then tells whether it is the same teacher)."""
    files = (study.user_attrs.get("teacher") or {}).get("files") or {}
    missing = {n: m for n, m in files.items() if not (Path(cache_dir) / n).is_file()}
    return list(download(missing, store, cache_dir).values()) if missing else []


def check_task(study: optuna.Study, digests: dict[str, str], *, cache_dir: Path) -> None:
    """Refuse a worker whose teacher or data differs from the study's (one line)."""
    teacher = study.user_attrs.get("teacher") or {}
    checks = (
        ("teacher", teacher.get("state_dict_sha256"), digests["teacher"]),
        ("task data", study.user_attrs.get("data_sha256"), digests["data"]),
    )
    for what, recorded, mine in checks:
        if recorded and recorded != mine:
            local = ", ".join(str(Path(cache_dir) / n) for n in teacher.get("files") or {})
            fix = (
                f"delete {local} to use the study's teacher"
                if what == "teacher" and local
                else "use the same task, data, weights and seed on every worker"
            )
            raise TaskError(
                f"this worker's {what} (sha256 {mine[:12]}) differs from study "
                f"{study.study_name!r}'s ({recorded[:12]}); {fix}"
            )
