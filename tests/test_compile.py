"""End to end through the Python API: real architectures compiled, run and checked against onnxruntime."""

import numpy as np
import pytest

import edgetune
from edgetune.errors import UserError, ValidationError
from edgetune.passes import STAGES, PassConfig, pipeline_stages
from edgetune.targets import get_target
from edgetune.validate import reference_outputs

from onnx_models import conv_net, light, long_reduction, two_outputs


def _check_against_onnxruntime(compiled, model_proto, seed=3):
    feed = compiled.signature.random_feed(seed)
    want = reference_outputs(model_proto, feed)
    got = compiled.run(feed)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", [
    "light_squeezenet",
    "light_shufflenet",
    "light_inception_v1",
    pytest.param("light_resnet50", marks=pytest.mark.slow),
    pytest.param("light_densenet121", marks=pytest.mark.slow),
])
def test_light_architectures(name):
    import onnx

    compiled = edgetune.compile(light(name), "host")
    assert compiled.validation.passed, compiled.validation.summary()
    _check_against_onnxruntime(compiled, onnx.load(str(light(name))))


def test_digits_example_classifies_like_onnxruntime(digits_model):
    import onnx

    compiled = edgetune.compile(digits_model)
    test = np.load(digits_model.parent / "digits_test.npz")
    images, labels = test["images"], test["labels"]
    proto = onnx.load(str(digits_model))
    ours = [int(np.argmax(compiled.run({"image": img[None]})[0])) for img in images[:200]]
    ref = [int(np.argmax(reference_outputs(proto, {"image": img[None]})[0])) for img in images[:200]]
    assert ours == ref
    assert np.mean(np.asarray(ours) == labels[:200]) > 0.9  # the example really classifies digits


@pytest.mark.parametrize("opt_level", [0, 1, 2, 3])
def test_every_opt_level_is_correct_and_recorded(opt_level):
    model = conv_net(channels=8, size=8)
    compiled = edgetune.compile(model, opt_level=opt_level)
    assert compiled.validation.passed
    ran = [p["name"] for p in compiled.metadata["passes"]["ran"]]
    block = get_target("host").channel_block()
    assert ran == [s.name for s in pipeline_stages(PassConfig(opt_level, channel_block=block))]
    assert ("FuseOps" in ran) == (opt_level >= 2)
    _check_against_onnxruntime(compiled, model)


def test_fusion_reduces_kernels():
    model = conv_net(channels=8, size=8)
    unfused = edgetune.compile(model, opt_level=1).profile(repeat=2)
    fused = edgetune.compile(model, opt_level=2).profile(repeat=2)
    count = lambda report: sum(k.calls for k in report.kernels if k.kind == "kernel")  # noqa: E731
    assert count(fused) < count(unfused)


def test_multiple_outputs_keep_order_and_integer_outputs_are_exact():
    compiled = edgetune.compile(two_outputs())
    assert [o.name for o in compiled.validation.outputs] == ["sum", "best"]
    best = compiled.validation.outputs[1]
    assert best.atol == 0 and best.rtol == 0 and best.passed
    out_sum, out_best = compiled.run({"a": np.eye(2, 5, dtype=np.float32), "b": np.zeros((2, 5), np.float32)})
    assert out_best.tolist() == [0, 1] and out_best.dtype == np.int64


def test_dynamic_batch_resolved_from_input_shapes():
    compiled = edgetune.compile(conv_net(channels=4, size=8, batch="N"), input_shapes={"x": (3, 3, 8, 8)})
    assert compiled.signature.inputs[0].shape == (3, 3, 8, 8)
    assert compiled.run([np.zeros((3, 3, 8, 8), np.float32)])[0].shape == (3, 10)


def test_validation_failure_carries_the_model():
    with pytest.raises(ValidationError, match="beyond atol=0, rtol=0") as err:
        edgetune.compile(long_reduction(), atol=0.0, rtol=0.0)
    assert err.value.compiled is not None and not err.value.compiled.validation.passed
    assert edgetune.compile(long_reduction()).validation.passed  # default float32 tolerance


def test_torch_module_compiles():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                 torch.nn.Linear(8 * 6 * 6, 5)).eval()
    x = torch.randn(1, 3, 8, 8)
    compiled = edgetune.compile(module, example_inputs=(x,), input_names=["img"])
    assert compiled.validation.passed
    with torch.no_grad():
        np.testing.assert_allclose(compiled.run({"img": x.numpy()})[0], module(x).numpy(), rtol=1e-4, atol=1e-5)


def test_bad_options():
    with pytest.raises(UserError, match="unexpected keyword argument 'optlevel'"):
        edgetune.compile(two_outputs(), optlevel=2)
    with pytest.raises(UserError, match="--opt-level 7"):
        edgetune.compile(two_outputs(), opt_level=7)
    with pytest.raises(UserError, match="unknown target 'tpu'; valid targets: arm64, cortex-a53, cortex-a72, "
                                        "cortex-a76, cuda-multi, cuda-sm75, cuda-sm80, cuda-sm86, cuda-sm87, "
                                        "cuda-sm89, cuda-sm90, host, neoverse-n1"):
        edgetune.compile(two_outputs(), "tpu")
    with pytest.raises(UserError, match="missing b"):
        edgetune.compile(two_outputs(), inputs={"a": np.zeros((2, 5), np.float32)})


def test_host_code_this_cpu_cannot_run_is_refused():
    """A host build for a newer core would crash at validation with SIGILL: it is a one-line error instead."""
    from edgetune.targets.host import HostTarget, missing_instructions

    newer = next((m for m in ("sapphirerapids", "skylake-avx512", "haswell") if missing_instructions(m)), None)
    if newer is None:
        pytest.skip("this CPU runs code for every core tried")
    with pytest.raises(UserError, match=f"mcpu {newer} uses .*which this CPU .* lacks"):
        HostTarget(newer)


def test_stage_names_are_unique():
    names = [s.name for s in STAGES]
    assert len(names) == len(set(names))
