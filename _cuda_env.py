"""The pip CUDA toolchain (`edgetune[cuda]`), made visible to TVM.

TVM's CUDA runtime library needs `libcudart.so.13` and a driver `libcuda.so.1` when `import tvm` loads it;
without them TVM silently drops CUDA support and CUDA builds export source only. `edgetune/__init__.py` runs
`prepare()` before it imports tvm. Where the extra's wheels are installed it points CUDA_PATH, PATH and NVRTC's
include path at them and preloads cudart and a driver: the real one when loadable, else a stub compiled from
`targets/libcuda_stub.c` into the cache (GPU-less build machines then compile real device code). When the
caller imported tvm first, TVM's CUDA runtime is loaded late. Without the extra it does nothing.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

STUB_SOURCE = Path(__file__).parent / "targets" / "libcuda_stub.c"
INSTALL_HINT = "pip install 'edgetune[cuda]'"


@dataclass
class CudaEnvironment:
    """What `prepare()` found and did; the CUDA targets turn a problem here into a one-line error."""

    toolkit: Path | None = None  # the wheels' root (site-packages/nvidia/cu13)
    driver: str = ""  # "real", or the path of the stub library loaded in its place
    problem: str = ""  # why CUDA builds cannot produce device code in this process (empty: they can)


ENV = CudaEnvironment()


def toolkit_root() -> Path | None:
    """site-packages/nvidia/cu13 when the extra's CUDA 13 runtime wheel is installed."""
    spec = importlib.util.find_spec("nvidia")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        root = Path(folder) / "cu13"
        if (root / "lib" / "libcudart.so.13").is_file():
            return root
    return None


def cache_folder() -> Path:
    return Path(os.environ.get("EDGETUNE_CACHE", Path.home() / ".cache" / "edgetune")) / "cuda"


def stub_driver() -> Path:
    """The stub `libcuda.so.1`, compiled once per version of its source (the file name carries its hash)."""
    source = STUB_SOURCE.read_bytes()
    folder = cache_folder() / f"stub-{hashlib.sha256(source).hexdigest()[:12]}"
    library = folder / "libcuda.so.1"
    if not library.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".libcuda.", dir=folder)
        os.close(fd)
        try:
            subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-Wl,-soname,libcuda.so.1", "-o", tmp,
                            str(STUB_SOURCE)], check=True, capture_output=True, text=True)
            os.replace(tmp, library)  # atomic: a concurrent first use sees the whole library or none
        finally:
            Path(tmp).unlink(missing_ok=True)
    return library


def prepend_path(variable: str, folders: list[Path]) -> None:
    """Put `folders` first in the search-path variable, once (child processes run `prepare()` again)."""
    entries = [e for e in os.environ.get(variable, "").split(os.pathsep) if e]
    os.environ[variable] = os.pathsep.join([*(str(f) for f in folders if str(f) not in entries), *entries])


def prepare() -> CudaEnvironment:
    """Set up the extra's toolchain for this process; a no-op (one path lookup) when it is not installed."""
    root = toolkit_root()
    if root is None:
        ENV.problem = f"the CUDA toolchain is not installed; {INSTALL_HINT}"
        return ENV
    ENV.toolkit = root
    os.environ.setdefault("CUDA_PATH", str(root))  # TVM reads CUDA_PATH (not CUDA_HOME)
    prepend_path("PATH", [root / "bin"])  # nvcc, ptxas
    cccl = f"-I{root / 'include' / 'cccl'}"  # NVRTC: cuda/std/* headers
    extra = os.environ.get("TVM_CUDA_NVRTC_EXTRA_OPTS", "")
    if cccl not in extra.split():
        os.environ["TVM_CUDA_NVRTC_EXTRA_OPTS"] = f"{extra} {cccl}".strip()
    try:
        libraries = [root / "lib"]
        try:
            ctypes.CDLL("libcuda.so.1", mode=ctypes.RTLD_GLOBAL)
            ENV.driver = "real"
        except OSError:
            stub = stub_driver()
            ctypes.CDLL(str(stub), mode=ctypes.RTLD_GLOBAL)
            ENV.driver = str(stub)
            libraries.append(stub.parent)
        ctypes.CDLL(str(root / "lib" / "libcudart.so.13"), mode=ctypes.RTLD_GLOBAL)
        # Child processes that import tvm first (MetaSchedule's builder and runner workers) find them here.
        prepend_path("LD_LIBRARY_PATH", libraries)
        if "tvm" in sys.modules:
            load_tvm_cuda_runtime()
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        ENV.problem = (f"cannot load the CUDA runtime or build the stub driver ({detail.strip().splitlines()[-1]}); "
                       "install gcc, or a NVIDIA driver")
    return ENV


def load_tvm_cuda_runtime() -> None:
    """TVM was imported before edgetune and skipped its CUDA runtime for want of cudart and a driver: load it
    now that they are, the way TVM's own loader (tvm/backend/cuda/__init__.py) does."""
    from tvm import base

    if "tvm_runtime_cuda" not in base._LOADED_LIBS:
        folder = Path(base._LOADED_LIBS["tvm_runtime"]._name).resolve().parent
        base._LOADED_LIBS["tvm_runtime_cuda"] = ctypes.CDLL(str(folder / "libtvm_runtime_cuda.so"),
                                                            mode=ctypes.RTLD_LOCAL)
