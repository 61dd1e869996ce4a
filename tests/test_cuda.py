"""CUDA targets: libraries built on this GPU-less machine carry real device code for every architecture asked
for, load with TVM's runtime, and run (checked against onnxruntime) where a GPU exists.

The toolchain is the `edgetune[cuda]` extra (setup.sh installs it); without it every test here skips with that
fix. Device code is checked by scanning the exported file (targets/device_code.py), independently of TVM.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tvm

import edgetune
from edgetune import _cuda_env
from edgetune.errors import UserError
from edgetune.frontend import import_model, load_model
from edgetune.passes import PassConfig, run_passes
from edgetune.targets import get_target, target_names
from edgetune.targets.device_code import device_architectures

from onnx_models import conv_net, save

pytestmark = pytest.mark.skipif(_cuda_env.ENV.toolkit is None,
                                reason=f"the CUDA toolchain is not installed: {_cuda_env.INSTALL_HINT}")

EDGETUNE = str(Path(sys.executable).parent / "edgetune")
EM_AARCH64 = 183  # ELF e_machine of the host side
MULTI = ["sm_75", "sm_80", "sm_86", "sm_89", "sm_90", "compute_90"]
BUILDS = {  # id: (model, target, precision, the device code the library must hold, exactly)
    "digits-sm80": ("digits", "cuda-sm80", "fp32", ["sm_80"]),
    "digits-multi": ("digits", "cuda-multi", "fp32", MULTI),
    "convnet-sm89-fp16": ("conv_net", "cuda-sm89", "fp16", ["sm_89"]),
    "convnet-multi": ("conv_net", "cuda-multi", "fp32", MULTI),
}


@pytest.fixture(scope="module")
def models(digits_model, tmp_path_factory):
    return {"digits": digits_model, "conv_net": save(conv_net(), tmp_path_factory.mktemp("cuda") / "conv.onnx")}


@pytest.fixture(scope="module", params=sorted(BUILDS))
def built(request, models):
    name, target, precision, expected = BUILDS[request.param]
    return edgetune.compile(models[name], target=target, precision=precision), expected


def module_kinds(module) -> set[str]:
    return {module.kind, *(kind for imported in module.imports for kind in module_kinds(imported))}


def without_cuda_setup() -> dict:
    """This process's environment minus the library path `_cuda_env` added, as a CI shell starts."""
    return {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}


def test_library_holds_device_code_for_every_architecture(built):
    compiled, expected = built
    assert device_architectures(compiled.library) == expected


def test_library_loads_with_the_tvm_runtime(built):
    compiled, _ = built
    module = tvm.runtime.load_module(str(compiled.library))
    assert "cuda" in module_kinds(module)  # the CUDA module was rebuilt from the embedded binary


@pytest.mark.skipif(tvm.cuda(0).exist, reason="a GPU is present: validation ran instead of being skipped")
def test_validation_is_skipped_without_a_gpu(built):
    compiled, _ = built
    assert compiled.validation == {"skipped": True, "reason": get_target(compiled.target.name).unavailable_reason()}
    assert "tvm.cuda(0).exist is False" in compiled.validation["reason"]


@pytest.mark.skipif(not tvm.cuda(0).exist, reason="tvm.cuda(0).exist is False")
def test_runs_on_the_gpu_and_matches_onnxruntime(digits_model, tmp_path):
    preset = f"cuda-sm{tvm.cuda(0).compute_version.replace('.', '')}"
    for target in ([preset] if preset in target_names() else []) + ["cuda-multi"]:
        for precision in ("fp32", "fp16"):
            compiled = edgetune.compile(digits_model, target=target, precision=precision)
            assert compiled.validation.passed, compiled.validation.summary()
            assert compiled.profile(repeat=5).stats["p50_ms"] > 0


def test_fp16_keeps_float32_at_the_boundary():
    imported = import_model(load_model(conv_net()), None)
    mod = run_passes(imported.mod, PassConfig(precision="fp16")).mod
    main = mod["main"]
    assert [str(p.ty) for p in main.params] == ['R.Tensor((1, 3, 16, 16), dtype="float32")']
    assert str(main.body.body.ty).endswith('dtype="float32")')
    kernels = [str(f) for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert any("float16" in k for k in kernels)


def test_fp16_is_refused_for_cpu_targets(digits_model):
    with pytest.raises(UserError, match="--precision fp16 is not available for target host"):
        edgetune.compile(digits_model, target="host", precision="fp16")


def test_scanner_reads_nvcc_fatbins(tmp_path):
    """The scan against nvcc's own output: two SASS architectures and one PTX, nothing else."""
    source = tmp_path / "k.cu"
    source.write_text('extern "C" __global__ void inc(float* a) { a[threadIdx.x] += 1.0f; }\n')
    fatbin = tmp_path / "k.fatbin"
    subprocess.run(["nvcc", "--fatbin", "-gencode", "arch=compute_75,code=sm_75", "-gencode",
                    "arch=compute_90,code=sm_90", "-gencode", "arch=compute_90,code=compute_90", "-o", fatbin,
                    source], check=True, capture_output=True)
    assert device_architectures(fatbin) == ["sm_75", "sm_90", "compute_90"]
    host_library = Path(tvm.__file__).parent / "lib" / "libtvm_runtime.so"
    assert device_architectures(host_library) == []


def test_export_refuses_a_source_only_library(digits_model, tmp_path):
    """TVM on its own, without cudart and a driver, builds CUDA source only (its CUDA runtime is not loaded) and
    exports it without complaint; edgetune's export must refuse that executable, delete the file and say why."""
    script = textwrap.dedent(f"""
        import json, onnx, tvm
        from pathlib import Path
        from tvm import relax
        from tvm.relax.frontend.onnx import from_onnx
        from tvm.s_tir import dlight as dl
        assert not tvm.runtime.enabled("cuda")
        target = tvm.target.Target({{"kind": "cuda", "arch": "sm_80"}}, host={{"kind": "llvm"}})
        mod = relax.get_pipeline("zero")(from_onnx(onnx.load({str(digits_model)!r})))
        with target:
            mod = dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.Reduction(), dl.gpu.Fallback())(mod)
            executable = tvm.compile(mod, target=target)
        from edgetune.errors import UserError
        from edgetune.targets import get_target
        library = Path({str(tmp_path / "model.so")!r})
        try:
            get_target("cuda-sm80").export(executable, library)
            print(json.dumps({{"error": None}}))
        except UserError as exc:
            print(json.dumps({{"error": str(exc), "left": library.exists()}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env=without_cuda_setup())
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["left"] is False
    assert outcome["error"].startswith("the cuda-sm80 library holds no device code for sm_80 (found: none, only "
                                       "CUDA source): TVM's CUDA runtime was not loaded;")
    assert "pip install 'edgetune[cuda]'" in outcome["error"]


@pytest.mark.skipif(_cuda_env.ENV.driver == "real", reason="a real NVIDIA driver is loadable: no stub is built")
def test_compile_refuses_before_work_when_the_stub_driver_cannot_be_built(digits_model, tmp_path):
    """No driver and no gcc (an empty PATH, an empty cache): nothing can make TVM's CUDA runtime load."""
    env = {**without_cuda_setup(), "PATH": str(tmp_path), "EDGETUNE_CACHE": str(tmp_path / "cache")}
    script = ("import sys\nfrom edgetune.cli import main\n"
              f"sys.exit(main(['compile', {str(digits_model)!r}, '-t', 'cuda-multi', '-o', {str(tmp_path / 'o')!r}]))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.strip().splitlines() == [
        "edgetune: error: cannot load the CUDA runtime or build the stub driver ([Errno 2] No such file or "
        "directory: 'gcc'); install gcc, or a NVIDIA driver"]
    assert not (tmp_path / "o").exists()


def test_targets_lists_the_cuda_presets():
    result = subprocess.run([EDGETUNE, "targets"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for name in ("cuda-sm75", "cuda-sm80", "cuda-sm86", "cuda-sm87", "cuda-sm89", "cuda-sm90", "cuda-multi"):
        assert f"\n{name}: " in result.stdout
    assert '"arch": "sm_90"' in result.stdout and '"max_shared_memory_per_block": 49152' in result.stdout


def test_compile_cli_writes_the_artifact_without_validation(digits_model, tmp_path):
    out = tmp_path / "gpu"
    result = subprocess.run([EDGETUNE, "compile", digits_model, "-t", "cuda-sm86", "-o", out],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["validation"]["skipped"] and manifest["latency"] is None
    assert manifest["target"]["tvm"]["arch"] == "sm_86"
    assert device_architectures(out / "model.so") == ["sm_86"]
    assert not manifest["schedules"]["unscheduled"]


def test_input_names_that_are_not_c_identifiers(tmp_path):
    """ONNX names like light_resnet50's `gpu_0/data_0` name the CUDA kernels' parameters; they are renamed for
    the compiler while the signature keeps them (and the host build still validates with them)."""
    model = conv_net()
    model.graph.input[0].name = model.graph.node[0].input[0] = "gpu_0/data_0"
    compiled = edgetune.compile(model, target="cuda-sm80")
    assert compiled.signature.input_names == ["gpu_0/data_0"]
    assert device_architectures(compiled.library) == ["sm_80"]
    assert edgetune.compile(model, target="host").validation.passed


def test_without_the_extra_nothing_changes_and_cuda_targets_name_the_fix(digits_model, tmp_path):
    """A regular `nvidia` package first on the path hides the extra's wheels, as on a machine without them."""
    (tmp_path / "nvidia").mkdir()
    (tmp_path / "nvidia" / "__init__.py").write_text("")
    script = textwrap.dedent(f"""
        import json, os, sys
        before = dict(os.environ)
        import edgetune, tvm
        from edgetune import _cuda_env
        from edgetune.cli import main
        changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
        print(json.dumps({{"changed": changed, "cuda": tvm.runtime.enabled("cuda"), "toolkit": _cuda_env.ENV.toolkit}}))
        sys.stdout.flush()
        sys.exit(main(["compile", {str(digits_model)!r}, "-t", "cuda-sm80", "-o", {str(tmp_path / "o")!r}]))
    """)
    env = {k: v for k, v in without_cuda_setup().items() if k not in ("CUDA_PATH", "TVM_CUDA_NVRTC_EXTRA_OPTS")}
    env["PYTHONPATH"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert json.loads(result.stdout.strip().splitlines()[0]) == {"changed": [], "cuda": False, "toolkit": None}
    assert result.returncode == 2
    assert result.stderr.strip() == ("edgetune: error: the CUDA toolchain is not installed; "
                                     "pip install 'edgetune[cuda]'")
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-g++") is None,
                    reason="needs aarch64-linux-gnu-g++: `apt-get install g++-aarch64-linux-gnu` (setup.sh does it)")
def test_jetson_library_is_aarch64_with_sm87_code(digits_model):
    compiled = edgetune.compile(digits_model, target="cuda-sm87")
    header = compiled.library.read_bytes()[:20]
    assert int.from_bytes(header[18:20], "little") == EM_AARCH64
    assert device_architectures(compiled.library) == ["sm_87"]
    assert "aarch64" in compiled.validation["reason"]
