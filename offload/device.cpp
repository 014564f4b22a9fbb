// Choosing the device: the GPU when one is usable (or asked for), the host-emulated one otherwise.
#include <cstdio>

#include "offload/device.h"
#include "src/common/units.h"

#if defined(STRATA_HAVE_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace strata::offload {
namespace {

// Number of usable CUDA devices, and why there are none when 0.
int cuda_devices(std::string* why_none) {
#if defined(STRATA_HAVE_CUDA)
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    *why_none = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
    (void)cudaGetLastError();
    return 0;
  }
  if (n == 0) *why_none = "the CUDA runtime sees no device";
  return n;
#else
  *why_none = "this build of strata has no CUDA (configured with STRATA_CUDA=OFF or without nvcc)";
  return 0;
#endif
}

}  // namespace

std::vector<std::string> describe_cuda_devices(std::string* why_none) {
  std::vector<std::string> out;
  const int n = cuda_devices(why_none);
#if defined(STRATA_HAVE_CUDA)
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) {
      (void)cudaGetLastError();
      out.push_back(std::to_string(i) + ": (properties unavailable)");
      continue;
    }
    size_t free = 0, total = 0;
    int prev = 0;
    (void)cudaGetDevice(&prev);
    const bool got = cudaSetDevice(i) == cudaSuccess && cudaMemGetInfo(&free, &total) == cudaSuccess;
    (void)cudaGetLastError();
    (void)cudaSetDevice(prev);
    out.push_back(std::to_string(i) + ": " + p.name + ", sm_" + std::to_string(p.major) + std::to_string(p.minor) +
                  ", " + format_bytes(p.totalGlobalMem) + (got ? ", " + format_bytes(free) + " free" : std::string()));
  }
#else
  (void)n;
#endif
  return out;
}

int usable_cuda_devices() {
  std::string why;
  return cuda_devices(&why);
}

Status use_cuda_device(int index) {
#if defined(STRATA_HAVE_CUDA)
  if (const cudaError_t e = cudaSetDevice(index); e != cudaSuccess) {
    (void)cudaGetLastError();
    return unsupported("CUDA device " + std::to_string(index) + ": " + cudaGetErrorName(e) + ": " +
                       cudaGetErrorString(e));
  }
  return Status::ok();
#else
  return unsupported("CUDA device " + std::to_string(index) + ": this build of strata has no CUDA");
#endif
}

StatusOr<DeviceChoice> parse_device_choice(const std::string& s) {
  if (s == "auto") return DeviceChoice::kAuto;
  if (s == "host") return DeviceChoice::kHost;
  if (s == "cuda" || s == "gpu") return DeviceChoice::kCuda;
  return invalid_argument("device = '" + s + "': expected auto, host or cuda");
}

StatusOr<std::unique_ptr<Device>> open_device(DeviceChoice choice, size_t budget_bytes,
                                              const std::function<void(const std::string&)>& log) {
  auto say = [&](const std::string& m) {
    if (log) log(m);
  };
  std::string why_none;
  const int n = choice == DeviceChoice::kHost ? 0 : cuda_devices(&why_none);
  if (n > 0) {
#if defined(STRATA_HAVE_CUDA)
    STRATA_ASSIGN_OR_RETURN(auto dev, make_cuda_device(-1, budget_bytes));
    say("using " + dev->name());
    return dev;
#endif
  }
  if (choice == DeviceChoice::kCuda)
    return unsupported("device 'cuda' was asked for, but no CUDA device is usable: " + why_none +
                       " (use device 'host' for the host-emulated device)");
  if (budget_bytes == 0)
    return invalid_argument("the host-emulated device needs a memory budget: set device_bytes > 0");
  auto dev = make_host_device(budget_bytes);
  say(choice == DeviceChoice::kHost ? "using the " + dev->name() + " (device 'host')"
                                    : "no usable CUDA device (" + why_none + "); using the " + dev->name());
  return dev;
}

}  // namespace strata::offload
