/* A stand-in for the NVIDIA driver library (libcuda.so.1) on machines without a GPU.
 *
 * TVM's CUDA runtime (libtvm_runtime_cuda.so) links against libcuda.so.1; without one, `import tvm` skips it and
 * CUDA builds export source only. This library provides the driver entry points TVM's runtime imports, each
 * failing with CUDA_ERROR_STUB_LIBRARY, so that device code is compiled and exported but nothing runs.
 * edgetune/_cuda_env.py compiles it at first use and loads it only when no real driver is loadable:
 *     gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o libcuda.so.1 libcuda_stub.c
 */

typedef int CUresult;

#define CUDA_ERROR_STUB_LIBRARY 34

static const char stub_message[] = "edgetune's stub libcuda.so.1: no NVIDIA driver on this machine";

CUresult cuGetErrorName(CUresult error, const char **name) {
    (void)error;
    *name = "CUDA_ERROR_STUB_LIBRARY";
    return 0;
}

CUresult cuGetErrorString(CUresult error, const char **text) {
    (void)error;
    *text = stub_message;
    return 0;
}

/* The other entry points TVM's runtime imports, and those libcudart looks up when it starts: they take
 * pointers and handles (ignored here; the x86-64 and aarch64 calling conventions allow it) and all fail. */
#define STUB(name) \
    CUresult name(void) { return CUDA_ERROR_STUB_LIBRARY; }

STUB(cuDeviceGetName)
STUB(cuFuncSetAttribute)
STUB(cuLaunchKernelEx)
STUB(cuModuleGetFunction)
STUB(cuModuleLoadData)
STUB(cuModuleUnload)
STUB(cuTensorMapEncodeTiled)
STUB(cuInit)
STUB(cuDriverGetVersion)
STUB(cuGetProcAddress_v2)
