"""The container image's non-root user can write every path the default config writes to.

Relative defaults ([recording] dir, [memory] path) resolve against the final stage's WORKDIR,
so the Dockerfile must hand that directory to the user it runs as. There is no Docker engine
here: the final stage's own settings (ENV, WORKDIR, USER and the directories it creates with
``install -d -o UID``) are read from infra/Dockerfile, that layout is rebuilt under a temporary
root, and a forked child that has dropped to the image's uid writes each default path.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest
import yaml

from voicebot.config import load_config

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "infra" / "Dockerfile"


@dataclass
class FinalStage:
    env: dict[str, str] = field(default_factory=dict)
    workdir: PurePosixPath = field(default_factory=lambda: PurePosixPath("/"))
    uid: int = 0
    gid: int = 0
    owned_dirs: dict[PurePosixPath, tuple[int, int, int]] = field(default_factory=dict)
    """directories the stage creates: path -> (uid, gid, mode)"""


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            yield word.upper(), rest.strip()


def final_stage(text: str) -> FinalStage:
    stage = FinalStage()
    for word, rest in _instructions(text):
        if word == "FROM":
            stage = FinalStage()
        elif word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                stage.env[key] = value
        elif word == "WORKDIR":
            stage.workdir = stage.workdir / rest
        elif word == "USER":
            user, _, group = rest.partition(":")
            assert user.isdigit(), "USER should be numeric so Kubernetes runAsNonRoot can verify it"
            stage.uid, stage.gid = int(user), int(group or user)
        elif word == "RUN":
            for command in re.split(r"&&|;", rest):
                args = shlex.split(command)
                if args[:2] == ["install", "-d"]:
                    opts = dict(zip(args[2::2], args[3::2], strict=False))
                    paths = [a for a in args[2:] if a.startswith("/")]
                    mode = int(opts.get("-m", "0755"), 8)
                    for path in paths:
                        stage.owned_dirs[PurePosixPath(path)] = (int(opts["-o"]), int(opts["-g"]), mode)
    return stage


def default_write_paths(env: dict[str, str]) -> list[PurePosixPath]:
    """Every path the built-in config writes to, as the config gives it (maybe relative)."""
    config = load_config(None, env=env)
    return [PurePosixPath(config.recording.dir) / "x.jsonl", PurePosixPath(config.memory.path)]


def test_the_final_stage_runs_as_a_non_root_user_in_a_directory_it_owns() -> None:
    stage = final_stage(DOCKERFILE.read_text())
    assert stage.uid != 0
    assert stage.workdir in stage.owned_dirs, f"WORKDIR {stage.workdir} is not created for the user"
    owner, _, mode = stage.owned_dirs[stage.workdir]
    assert owner == stage.uid and mode & 0o700 == 0o700
    assert stage.env.get("HOME") == str(stage.workdir)
    for path in default_write_paths(stage.env):
        resolved = stage.workdir / path
        assert any(resolved.is_relative_to(d) for d, (uid, _, _) in stage.owned_dirs.items() if uid == stage.uid), (
            f"default path {path} resolves to {resolved}, outside every directory the image's user owns"
        )


def test_the_kubernetes_pod_mounts_a_writable_volume_at_the_workdir() -> None:
    """The Deployment's root filesystem is read-only: the image's WORKDIR needs a volume."""
    stage = final_stage(DOCKERFILE.read_text())
    deployment = yaml.safe_load((ROOT / "infra" / "k8s" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert str(stage.workdir) in mounts and not mounts[str(stage.workdir)].get("readOnly")
    assert pod["securityContext"]["runAsUser"] == stage.uid


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create the image's layout and drop to its uid")
def test_the_images_user_can_write_every_default_path() -> None:
    stage = final_stage(DOCKERFILE.read_text())
    root = Path(tempfile.mkdtemp(prefix="voicebot-image-"))
    try:
        root.chmod(0o755)  # the image's / is traversable by everyone
        for directory, (uid, gid, mode) in stage.owned_dirs.items():
            path = root / directory.relative_to("/")
            path.mkdir(parents=True, exist_ok=True)
            for parent in [path, *path.relative_to(root).parents][1:]:
                (root / parent).chmod(0o755)
            os.chown(path, uid, gid)
            path.chmod(mode)
        workdir = root / stage.workdir.relative_to("/")
        paths = default_write_paths(stage.env)
        pid = os.fork()
        if pid == 0:  # the child: become the image's user and write what a call would write
            status = 1
            try:
                os.setgroups([])
                os.setgid(stage.gid)
                os.setuid(stage.uid)
                os.chdir(workdir)
                for path in paths:
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                    if path.suffix == ".sqlite3":
                        sqlite3.connect(path).execute("create table t (x)").connection.close()
                    else:
                        Path(path).write_text("{}\n")
                status = 0
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, f"uid {stage.uid} could not write {paths} in {workdir}"
        for path in paths:
            written = workdir / path
            assert written.exists() and written.stat().st_uid == stage.uid
    finally:
        shutil.rmtree(root)
