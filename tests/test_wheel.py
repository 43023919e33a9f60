"""The installed package, not the checkout: build the wheel, install it into a fresh environment and
run the `cfdm` command from a folder outside the repository; the wheel holds every module of
cdm_core and declares every third-party module the engine imports.

Offline: the wheel is built without build isolation (the virtualenv's setuptools) and installed
with --no-deps; the fresh environment sees the virtualenv's third-party packages through a `.pth`
line, which appends that site-packages to sys.path without running the `.pth` files inside it, so
the project's own editable install is not active there (asserted before the wheel goes in)."""

import ast
import email.parser
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# what a build must not copy: caches, earlier build output, the virtualenv, test output
_SKIP = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
                               ".pytest_cache", ".ruff_cache", ".hypothesis", "test-artifacts", "out", ".device-carry")
# import name -> distributions that provide it, for modules not installed here (faiss: either build)
KNOWN = {"sklearn": ["scikit-learn"], "PIL": ["pillow"], "skimage": ["scikit-image"], "umap": ["umap-learn"],
         "faiss": ["faiss-cpu", "faiss-gpu"], "yaml": ["pyyaml"], "fontTools": ["fonttools"]}


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))} exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """One wheel, built from a copy of the working tree (a build in place leaves build/ and an
    egg-info in the checkout), installed into one fresh environment."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=_SKIP)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "--no-cache-dir", "--disable-pip-version-check", "-q", "-w", tmp / "dist", src], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("cfdm_explorer-*.whl")

    env_dir = tmp / "env"
    _run([sys.executable, "-m", "venv", "--without-pip", env_dir])
    python = env_dir / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    deps = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (site / "_test_wheel_deps.pth").write_text("".join(f"{p}\n" for p in deps))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env |= {"CDM_CACHE_DIR": str(tmp / "cache"), "PYTHONNOUSERSITE": "1",
            "OMP_NUM_THREADS": "1"}  # the autoencoder's many tiny steps: threads only contend
    work = tmp / "work"
    work.mkdir()
    kw = {"cwd": work, "env": env}
    # the third-party packages are there, the project is not: nothing below can import the checkout
    _run([python, "-c", "import numpy, torch, safetensors"], **kw)
    before = subprocess.run([python, "-c", "import cdm_core"], capture_output=True, text=True, **kw)
    assert before.returncode != 0 and "No module named 'cdm_core'" in before.stderr, before

    # --ignore-installed: pip, run by the fresh interpreter, also sees the virtualenv's editable
    # cfdm-explorer through the .pth line; it must neither count it as installed nor touch it
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--no-cache-dir",
          "--ignore-installed", "--disable-pip-version-check", "-q", wheel], **kw)
    return SimpleNamespace(src=src, wheel=wheel, python=python, site=site, cfdm=env_dir / "bin" / "cfdm",
                           work=work, kw=kw)


def _npz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    for k, v in out.items():
        if v.dtype.kind == "f":
            assert np.isfinite(v).all(), f"{path.name}: {k} has non-finite values"
    out["config"] = json.loads(str(out["config"]))
    return out


def test_the_wheel_holds_every_module_and_imports_from_its_own_site(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    modules = {p.relative_to(installed.src).as_posix() for p in (installed.src / "cdm_core").rglob("*.py")}
    assert modules - names == set(), f"not in the wheel: {sorted(modules - names)}"
    p = _run([installed.python, "-c", "import cdm_core, cdm_core.cli.main; print(cdm_core.__file__)"], **installed.kw)
    where = Path(p.stdout.strip()).resolve()
    assert where.is_relative_to(installed.site.resolve()), f"cdm_core imported from {where}, not the wheel"
    assert installed.cfdm.exists(), "the wheel installed no cfdm command"


def test_installed_cfdm_sample(installed):
    _run([installed.cfdm, "sample", "--data", "moons", "--n", "4", "--out", "s.npz"], **installed.kw)
    z = _npz(installed.work / "s.npz")
    assert z["samples"].shape == (4, 2) and z["config"]["sampler"]["n_samples"] == 4
    ids, w = z["source_ids"], z["source_weights"]
    assert ids.shape == w.shape and ids.shape[0] == 4
    np.testing.assert_allclose(np.where(ids >= 0, w, 0).sum(axis=1), 1.0, atol=1e-9)


def test_installed_cfdm_sensitivity(installed):
    _run([installed.cfdm, "sensitivity", "--data", "moons", "--n", "2", "--steps", "5", "--draws", "2",
          "--top", "3", "--out", "sens.npz"], **installed.kw)
    z = _npz(installed.work / "sens.npz")
    assert z["samples"].shape == (2, 2) and z["jacobian"].shape == (2, 3, 2)
    assert z["training_ids"].shape == (2, 3) and (z["training_ids"] >= 0).all()
    assert z["influence"].shape == (2, 3)


def test_installed_cfdm_sample_in_latent_space(installed):
    # 64 digits as an (N, H, W) image file: the autoencoder trains in seconds (the full set: ~30 s)
    from sklearn.datasets import load_digits
    np.save(installed.work / "digits64.npy", (load_digits().images[:64] / 16).astype(np.float32))
    p = _run([installed.cfdm, "sample", "--data", "digits64.npy", "--space", "latent", "--latent-dim", "4",
              "--n", "3", "--sigma", "0.5", "--draws", "2", "--steps", "5", "--out", "lat.npz"], **installed.kw)
    assert "latent space: K=4" in p.stderr
    z = _npz(installed.work / "lat.npz")
    assert z["samples"].shape == (3, 64) and z["latents"].shape == (3, 4) and z["train_latents"].shape == (64, 4)
    assert z["config"]["sampler"]["space"] == "latent" and z["config"]["autoencoder"]["autoencoder_hash"]
    ids, w = z["source_ids"], z["source_weights"]
    blend = np.einsum("nk,nkd->nd", np.where(ids >= 0, w, 0), z["train_latents"][np.maximum(ids, 0)])
    np.testing.assert_allclose(blend, z["latents"], atol=1e-12)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_wheel_declares_every_third_party_import(installed):
    with zipfile.ZipFile(installed.wheel) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        headers = email.parser.Parser().parsestr(zf.read(meta).decode())
    # a requirement behind an extra (faiss-cpu/-gpu, ray, streamlit) counts as declared
    declared = {_canonical(re.match(r"[A-Za-z0-9._-]+", r.strip()).group()) for r in headers.get_all("Requires-Dist")}
    installed_here = importlib.metadata.packages_distributions()
    imports: dict[str, str] = {}  # top-level module -> first file importing it
    for f in sorted((installed.src / "cdm_core").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for m in mods:
                top = m.split(".")[0]
                if top != "cdm_core" and top not in sys.stdlib_module_names:
                    imports.setdefault(top, f"{f.relative_to(installed.src)}:{node.lineno}")
    assert {"numpy", "torch", "safetensors"} <= set(imports)  # the scan sees the engine's imports
    missing = []
    for top, where in sorted(imports.items()):
        dists = list(dict.fromkeys(_canonical(d) for d in KNOWN.get(top, []) + installed_here.get(top, []) + [top]))
        if not declared & set(dists):
            missing.append(f"{top} (imported in {where}; distribution {' or '.join(dists)})")
    assert not missing, "pyproject.toml [project] dependencies (or an extra) lack: " + "; ".join(missing)
