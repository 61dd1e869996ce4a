// Run a model compiled by edgetune (model.so) once, with nothing but the TVM runtime: no Python on the device.
//
//   run_model model.so INPUT.f32 1x1x8x8 [INPUT2.f32 SHAPE ...]
//
// Each input is a raw little-endian float32 file and its shape; every output is printed as one line
// `output K [shape]: values...`. Build for a board (or qemu) against the aarch64 TVM runtime:
//   aarch64-linux-gnu-g++ -std=c++17 run_model.cc -I tvm_ffi/include -I tvm_ffi/3rdparty/dlpack/include \
//     -L tvm/lib -L tvm_ffi/lib -ltvm_runtime -ltvm_ffi -o run_model
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

struct CPUAlloc {
  void AllocData(DLTensor* tensor) { tensor->data = std::malloc(ffi::GetDataSize(*tensor)); }
  void FreeData(DLTensor* tensor) { std::free(tensor->data); }
};

static const DLDevice kCPU{kDLCPU, 0};
static const int kPooledAllocator = 2;

static ffi::Tensor ReadInput(const std::string& path, const std::string& shape_text) {
  std::vector<int64_t> shape;
  std::stringstream dims(shape_text);
  for (std::string dim; std::getline(dims, dim, 'x');) shape.push_back(std::stoll(dim));
  ffi::Tensor tensor = ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::Shape(shape), DLDataType{kDLFloat, 32, 1}, kCPU);
  std::ifstream file(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (bytes.size() != ffi::GetDataSize(*tensor.GetDLTensorPtr())) {
    std::fprintf(stderr, "%s: %zu bytes, but shape %s needs %zu\n", path.c_str(), bytes.size(),
                 shape_text.c_str(), ffi::GetDataSize(*tensor.GetDLTensorPtr()));
    std::exit(2);
  }
  std::copy(bytes.begin(), bytes.end(), static_cast<char*>(tensor.data_ptr()));
  return tensor;
}

static void PrintOutput(int index, const ffi::Tensor& tensor) {
  std::printf("output %d [", index);
  for (int i = 0; i < tensor.ndim(); ++i) {
    std::printf(i ? " %lld" : "%lld", static_cast<long long>(tensor.shape()[i]));
  }
  std::printf("]:");
  const float* values = static_cast<const float*>(tensor.data_ptr());
  for (int64_t i = 0; i < tensor.numel(); ++i) std::printf(" %.9g", values[i]);
  std::printf("\n");
}

int main(int argc, char** argv) {
  if (argc < 4 || argc % 2 != 0) {
    std::fprintf(stderr, "usage: %s model.so INPUT.f32 SHAPE [INPUT.f32 SHAPE ...]\n", argv[0]);
    return 2;
  }
  // The library holds the Relax VM executable; the VM runs it on the CPU with a pooled allocator.
  ffi::Module library = ffi::Module::LoadFromFile(argv[1]);
  ffi::Module vm = library->GetFunction("vm_load_executable").value()().cast<ffi::Module>();
  vm->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, kPooledAllocator);
  std::vector<ffi::Any> inputs;
  for (int i = 2; i < argc; i += 2) inputs.push_back(ReadInput(argv[i], argv[i + 1]));
  ffi::Function main_fn = vm->GetFunction("main").value();
  ffi::Any result;
  main_fn.CallPacked(reinterpret_cast<const ffi::AnyView*>(inputs.data()), inputs.size(), &result);
  if (auto tensor = result.try_cast<ffi::Tensor>()) {
    PrintOutput(0, *tensor);
  } else {
    ffi::Array<ffi::Tensor> outputs = result.cast<ffi::Array<ffi::Tensor>>();
    for (size_t i = 0; i < outputs.size(); ++i) PrintOutput(static_cast<int>(i), outputs[i]);
  }
  return 0;
}
