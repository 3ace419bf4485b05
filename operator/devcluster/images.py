"""Build the project's two images, the serving image and the operator image, from their Dockerfiles.

With a Docker engine, `docker build` does it (Docker Hub's base). Without one — these machines
have no Docker engine and reach no container registry — the images are built by buildah (Debian's
package, daemonless, `--isolation chroot`) from a base made here: a Debian bookworm root filesystem
with python3 made by mmdebstrap from Debian's archive, packed as a one-layer docker-archive.
The Dockerfiles are the same either way: only their `ARG BASE` differs. `pip` and `apt-get`
inside the build reach their registries as usual; the build machine's CA bundle is lent to RUN
steps (bind-mounted, never written into a layer), so a build behind a TLS-inspecting proxy works.

Everything is cached under `$MODELDEPLOY_CACHE/images`: the base (keyed by its package list),
buildah's storage, and each image as a docker-archive (for `ctr images import` and `docker load`)
and in an OCI layout (for `umoci unpack`), keyed by a digest of everything its build reads —
the base, the Dockerfile, the build args and every file of the build context. A build whose inputs
did not change is not run again.

    python -m devcluster.images build [--containerd-address SOCKET]   # both images (make images)
    python -m devcluster.images build --tag operator=IMG --tag modelserver=IMG2   # docker-build
    python -m devcluster.images push IMG [IMG2 ...]                                # docker-push
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("MODELDEPLOY_CACHE", Path.home() / ".cache" / "modeldeploy"))
IMAGES_DIR = CACHE / "images"


def _partial(archive: Path) -> Path:
    """Where an archive is written before it is renamed into place: per process, so two builds
    at once (two test workers, say) never rename each other's file away."""
    return archive.with_suffix(f".{os.getpid()}.partial")


SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# What the Dockerfiles expect of their base (as Docker Hub's python:3.11-slim-bookworm has it):
# `python` with its venv module, `useradd`, apt, CA certificates.
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "passwd", "ca-certificates")
BASE_TAG = "localhost/modeldeploy/base:bookworm-python3"
# pip in the base trusts the system's CA store, as Debian's own pip does (the image's venvs get
# pip's vendored certifi otherwise). During a build the store is the build machine's, lent to RUN
# steps by a read-only bind mount over the file; the image keeps its own.
BASE_PIP_CONF = b"[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n"
SERVING_IMAGE = "localhost/modeldeploy/modelserver:dev"
OPERATOR_IMAGE = "localhost/modeldeploy/operator:dev"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CONTAINERD_NAMESPACE = "k8s.io"


def log(text: str) -> None:
    print(f"[images] {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ImageSpec:
    """One image: its Dockerfile, build context and default tag."""

    name: str
    dockerfile: Path
    context: Path
    tag: str


SPECS = {
    "modelserver": ImageSpec(
        "modelserver", REPO_ROOT / "serving_image" / "Dockerfile", REPO_ROOT / "serving_image",
        SERVING_IMAGE,
    ),
    "operator": ImageSpec(
        "operator", REPO_ROOT / "operator" / "Dockerfile", REPO_ROOT, OPERATOR_IMAGE
    ),
}  # fmt: skip


@dataclass(frozen=True)
class BuiltImage:
    """An image built and cached: its tag, docker-archive and OCI layout (tag = `key`)."""

    name: str
    tag: str
    key: str
    docker_archive: Path
    oci_layout: Path

    @property
    def oci_ref(self) -> str:
        return f"{self.oci_layout}:{self.key}"


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with its output's tail."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        raise RuntimeError(f"{' '.join(argv[:4])} ... failed ({result.returncode}):\n{output}")
    return result


def docker_engine() -> bool:
    """Whether a Docker engine answers (not just a `docker` client on PATH)."""
    if shutil.which("docker") is None:
        return False
    try:
        found = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return found.returncode == 0


def why_no_local_builder() -> str | None:
    """Why images cannot be built here without Docker, or None when they can."""
    if os.geteuid() != 0:
        return "building images without Docker needs root (mmdebstrap and buildah run as root)"
    for tool in ("mmdebstrap", "buildah"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (hack/node-packages.sh installs it)"
    return None


# ------------------------------------------------------------------------------------ the base
def base_key() -> str:
    recipe = json.dumps(
        {
            "suite": SUITE,
            "packages": BASE_PACKAGES,
            "variant": "minbase",
            "pip": BASE_PIP_CONF.decode(),
        }
    )
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def ensure_base() -> Path:
    """The base image as a docker-archive, made with mmdebstrap once and cached."""
    archive = IMAGES_DIR / f"base-{SUITE}-{base_key()}.docker.tar"
    if archive.exists():
        return archive
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    log(f"base: mmdebstrap {SUITE} with {', '.join(BASE_PACKAGES)} ...")
    with tempfile.TemporaryDirectory(dir=IMAGES_DIR) as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        run(
            [
                "mmdebstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                '--aptopt=Acquire::Languages "none"',
                "--dpkgopt=path-exclude=/usr/share/{doc,man,info,locale}/*",
                "--dpkgopt=path-include=/usr/share/locale/locale.alias",
                SUITE,
                str(rootfs),
                DEBIAN_MIRROR,
            ]
        )
        add_file(rootfs, "./etc/pip.conf", BASE_PIP_CONF)
        partial = _partial(archive)
        write_docker_archive(rootfs, partial, BASE_TAG, created_by=f"mmdebstrap {SUITE}")
        partial.rename(archive)
    log(f"base: {archive.name} in {time.monotonic() - t0:.0f} s")
    return archive


def add_file(tar_path: Path, name: str, data: bytes, mode: int = 0o644) -> None:
    """Append a root-owned file to an uncompressed tar."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    with tarfile.open(tar_path, "a") as out:
        out.addfile(info, io.BytesIO(data))


def write_docker_archive(
    layer: Path, archive: Path, tag: str, created_by: str, config: dict | None = None
) -> None:
    """A docker-archive (what `docker save` writes) of one uncompressed layer tar."""
    digest = hashlib.sha256()
    with layer.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config
        or {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/bash"],
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{digest.hexdigest()}"]},
        "history": [{"created_by": created_by}],
    }
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    config_name = f"{hashlib.sha256(config_bytes).hexdigest()}.json"
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": ["layer.tar"]}]
    with tarfile.open(archive, "w") as out:
        for name, data in ((config_name, config_bytes), ("manifest.json", json.dumps(manifest))):
            payload = data if isinstance(data, bytes) else data.encode()
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            out.addfile(info, io.BytesIO(payload))
        out.add(layer, "layer.tar")


# ------------------------------------------------------------------------------- input digest
def dockerignore(context: Path) -> list[str]:
    path = context / ".dockerignore"
    if not path.exists():
        return []
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def ignored(relative: str, patterns: Iterable[str]) -> bool:
    parts = relative.split("/")
    for pattern in patterns:
        pattern = pattern.strip("/")
        bare = pattern.removeprefix("**/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes):
            return True
        if pattern.startswith("**/") and any(fnmatch.fnmatch(p, bare) for p in parts):
            return True
    return False


def context_files(context: Path) -> list[Path]:
    """The files a build may read from `context` (.dockerignore honoured), sorted."""
    patterns = dockerignore(context)
    found = []
    for root, dirs, files in os.walk(context):
        rel_root = Path(root).relative_to(context).as_posix()
        rel_root = "" if rel_root == "." else rel_root + "/"
        dirs[:] = sorted(d for d in dirs if not ignored(rel_root + d, patterns))
        found += [Path(root) / f for f in files if not ignored(rel_root + f, patterns)]
    return sorted(found)


def copied_sources(dockerfile: Path) -> list[str]:
    """The build-context paths the Dockerfile's COPY/ADD instructions read (not `--from` ones)."""
    sources = []
    text = dockerfile.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        words = line.split()
        if len(words) < 3 or words[0].upper() not in ("COPY", "ADD"):
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]):
            continue
        sources += args[:-1]
    return sources


def input_key(spec: ImageSpec, base: str, build_args: dict[str, str]) -> str:
    """Digest of everything the build reads — base, build args, Dockerfile and the files its
    COPY/ADD instructions take from the context (.dockerignore honoured); the same key means the
    same image, as with Docker's build cache."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"base": base, "args": build_args}, sort_keys=True).encode())
    digest.update(spec.dockerfile.read_bytes())
    sources = copied_sources(spec.dockerfile)
    for path in context_files(spec.context):
        relative = path.relative_to(spec.context).as_posix()
        if not any(relative == s.strip("/") or relative.startswith(s.strip("/") + "/")
                   for s in sources):  # fmt: skip
            continue
        digest.update(relative.encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------------------- buildah
class Buildah:
    """buildah with the project's own storage (not the host's /var/lib/containers)."""

    def __init__(self) -> None:
        self.root = IMAGES_DIR / "buildah" / "storage"
        self.runroot = IMAGES_DIR / "buildah" / "run"
        self.root.mkdir(parents=True, exist_ok=True)
        self.runroot.mkdir(parents=True, exist_ok=True)

    def __call__(self, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
        return run(
            ["buildah", f"--root={self.root}", f"--runroot={self.runroot}",
             "--storage-driver=overlay", *args],
            **kwargs,
        )  # fmt: skip

    def has(self, tag: str) -> bool:
        return (
            subprocess.run(
                ["buildah", f"--root={self.root}", f"--runroot={self.runroot}",
                 "--storage-driver=overlay", "inspect", "--type=image", tag],
                capture_output=True, check=False,
            ).returncode == 0
        )  # fmt: skip

    def load(self, archive: Path, tag: str) -> None:
        if not self.has(tag):
            self("pull", f"docker-archive:{archive}")

    def build(self, spec: ImageSpec, tag: str, build_args: dict[str, str], log_path: Path) -> None:
        """`buildah bud`: RUN steps chrooted with the host's network, and the host's CA bundle
        bind-mounted over the image's for their duration only. Intermediate layers are kept
        (--layers): the Dockerfiles install dependencies before copying the code, so a code
        change rebuilds only the steps after its COPY."""
        mounts = []
        if HOST_CA_BUNDLE.exists():
            mounts = [f"--volume={HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
        argv = [
            "bud", "--isolation=chroot", "--network=host", "--pull=never", "--layers=true",
            *mounts,
            *[f"--build-arg={k}={v}" for k, v in build_args.items()],
            f"--tag={tag}", f"--file={spec.dockerfile}", str(spec.context),
        ]  # fmt: skip
        with log_path.open("w") as out:
            done = subprocess.run(
                ["buildah", f"--root={self.root}", f"--runroot={self.runroot}",
                 "--storage-driver=overlay", *argv],
                stdout=out, stderr=subprocess.STDOUT, check=False,
            )  # fmt: skip
        if done.returncode != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
            raise RuntimeError(f"building {spec.name} failed (log: {log_path}):\n{tail}")


# ------------------------------------------------------------------------------------ building
def cached(spec: ImageSpec, key: str, tag: str) -> BuiltImage:
    return BuiltImage(
        name=spec.name,
        tag=tag,
        key=key,
        docker_archive=IMAGES_DIR / f"{spec.name}-{key}.docker.tar",
        oci_layout=IMAGES_DIR / "oci",
    )


def prune(name: str, keep: int = 2) -> None:
    """Delete all but the `keep` newest archives of image `name`: two checkouts on one machine
    (main and a branch) keep their own builds instead of rebuilding each other's every run."""
    archives = sorted(IMAGES_DIR.glob(f"{name}-*.docker.tar"), key=lambda p: p.stat().st_mtime)
    for stale in archives[:-keep]:
        stale.unlink(missing_ok=True)


def build_local(spec: ImageSpec, tag: str | None = None) -> BuiltImage:
    """Build `spec` with buildah on the local base, unless an image of the same inputs is cached."""
    tag = tag or spec.tag
    base_archive = ensure_base()
    build_args = {"BASE": BASE_TAG}
    key = input_key(spec, base_archive.name, build_args)
    image = cached(spec, key, tag)
    buildah = Buildah()
    if image.docker_archive.exists() and (image.oci_layout / "index.json").exists():
        log(f"{spec.name}: cached ({image.docker_archive.name})")
        image.docker_archive.touch()  # recently used: kept by prune()
        if tag != spec.tag or not buildah.has(tag):
            buildah.load(image.docker_archive, spec.tag)
            buildah("tag", spec.tag, tag)
        return image
    buildah.load(base_archive, BASE_TAG)
    t0 = time.monotonic()
    log(f"{spec.name}: building {spec.dockerfile.relative_to(REPO_ROOT)} on {BASE_TAG} ...")
    log_path = IMAGES_DIR / f"{spec.name}-build.log"
    buildah.build(spec, spec.tag, build_args, log_path)
    partial = _partial(image.docker_archive)
    partial.unlink(missing_ok=True)
    buildah("push", spec.tag, f"docker-archive:{partial}:{spec.tag}")
    buildah("push", spec.tag, f"oci:{image.oci_layout}:{key}")
    partial.rename(image.docker_archive)
    if tag != spec.tag:
        buildah("tag", spec.tag, tag)
    prune(spec.name)
    log(f"{spec.name}: built in {time.monotonic() - t0:.0f} s -> {image.docker_archive.name}")
    return image


def build_derived(spec: ImageSpec, base: BuiltImage) -> BuiltImage:
    """Build `spec`, a Dockerfile `FROM ${BASE}` over an image of ours (a test image: the serving
    image with a model baked in), unless an image of the same inputs is cached.

    Only the docker-archive is kept: its base layers are the base image's own, uncompressed, so
    containerd finds them already unpacked and importing it costs little more than reading it.
    """
    build_args = {"BASE": base.tag}
    key = input_key(spec, base.docker_archive.name, build_args)
    image = cached(spec, key, spec.tag)
    if image.docker_archive.exists():
        log(f"{spec.name}: cached ({image.docker_archive.name})")
        image.docker_archive.touch()  # recently used: kept by prune()
        return image
    buildah = Buildah()
    buildah.load(base.docker_archive, base.tag)
    t0 = time.monotonic()
    log(f"{spec.name}: building {spec.dockerfile.name} on {base.tag} ...")
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    buildah.build(spec, spec.tag, build_args, IMAGES_DIR / f"{spec.name}-build.log")
    partial = _partial(image.docker_archive)
    partial.unlink(missing_ok=True)
    buildah("push", spec.tag, f"docker-archive:{partial}:{spec.tag}")
    partial.rename(image.docker_archive)
    prune(spec.name)
    log(f"{spec.name}: built in {time.monotonic() - t0:.0f} s -> {image.docker_archive.name}")
    return image


def build_docker(spec: ImageSpec, tag: str | None = None) -> None:
    """`docker build` with the Dockerfile's default base (Docker Hub)."""
    tag = tag or spec.tag
    log(f"{spec.name}: docker build -t {tag}")
    subprocess.run(
        ["docker", "build", "-f", str(spec.dockerfile), "-t", tag, str(spec.context)], check=True
    )


def import_into_containerd(image: BuiltImage, ctr: Path, address: Path) -> None:
    """`ctr images import` of the docker-archive into containerd's k8s.io namespace, unpacked."""
    run([str(ctr), f"--address={address}", f"--namespace={CONTAINERD_NAMESPACE}",
         "images", "import", "--no-unpack=false", str(image.docker_archive)])  # fmt: skip


def built_images() -> dict[str, BuiltImage]:
    """The cached images for the current inputs, without building (empty when not built)."""
    found: dict[str, BuiltImage] = {}
    base = IMAGES_DIR / f"base-{SUITE}-{base_key()}.docker.tar"
    if not base.exists():
        return found
    for name, spec in SPECS.items():
        image = cached(spec, input_key(spec, base.name, {"BASE": BASE_TAG}), spec.tag)
        if image.docker_archive.exists() and (image.oci_layout / "index.json").exists():
            found[name] = image
    return found


def build(
    names: Iterable[str] = tuple(SPECS),
    tags: dict[str, str] | None = None,
    containerd: tuple[Path, Path] | None = None,
) -> dict[str, BuiltImage]:
    """Build (or reuse) the named images; import them into containerd when given (ctr, socket)."""
    tags = tags or {}
    if docker_engine():
        for name in names:
            build_docker(SPECS[name], tags.get(name))
        return {}
    reason = why_no_local_builder()
    if reason:
        raise SystemExit(f"images: cannot build here: {reason}")
    images = {name: build_local(SPECS[name], tags.get(name)) for name in names}
    if containerd is not None:
        for image in images.values():
            import_into_containerd(image, *containerd)
            log(f"{image.name}: imported into containerd as {image.tag}")
    return images


def push(refs: Iterable[str]) -> None:
    for ref in refs:
        if docker_engine():
            subprocess.run(["docker", "push", ref], check=True)
        else:
            Buildah()("push", ref, f"docker://{ref}")
        log(f"pushed {ref}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devcluster.images",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build (or reuse) the images")
    b.add_argument("--only", choices=sorted(SPECS), action="append")
    b.add_argument("--tag", action="append", default=[], metavar="NAME=REF",
                   help="also tag image NAME (operator, modelserver) as REF")  # fmt: skip
    b.add_argument("--containerd-address", type=Path, help="import into this containerd")
    b.add_argument("--ctr", type=Path, help="ctr binary (with --containerd-address)")
    b.add_argument("--if-possible", action="store_true",
                   help="exit 0 with the reason when images cannot be built here")  # fmt: skip
    p = sub.add_parser("push", help="push tagged images to their registries")
    p.add_argument("refs", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "push":
        push(args.refs)
        return 0
    tags = dict(t.split("=", 1) for t in args.tag)
    if args.if_possible and not docker_engine():
        reason = why_no_local_builder()
        if reason:
            log(f"skipped: {reason}")
            return 0
    containerd = None
    if args.containerd_address is not None and args.containerd_address.exists():
        containerd = (args.ctr or Path(shutil.which("ctr") or "ctr"), args.containerd_address)
    images = build(args.only or tuple(SPECS), tags, containerd)
    for image in images.values():
        print(f"{image.tag}\t{image.docker_archive}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
