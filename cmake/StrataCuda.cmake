# STRATA_CUDA=AUTO|ON|OFF: AUTO enables CUDA whenever nvcc is found, so CUDA sources compile and
# link on machines without a GPU. Sets STRATA_HAVE_CUDA / STRATA_HAVE_NCCL and the imported
# target strata::nccl.
include(CheckLanguage)

set(STRATA_HAVE_CUDA OFF)
set(STRATA_HAVE_NCCL OFF)
if(NOT STRATA_CUDA MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "STRATA_CUDA must be AUTO, ON or OFF, not '${STRATA_CUDA}'")
endif()

if(NOT STRATA_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    # 'native' fails without a GPU and the default is sm_75: name the targets (Ampere, Hopper).
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    enable_language(CUDA)
    set(CMAKE_CUDA_STANDARD 17)  # CMake 3.25 knows no CUDA20 flag for nvcc 13
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit REQUIRED)
    set(STRATA_HAVE_CUDA ON)
    set(_cuda_warn -Xcompiler=-Wall,-Wextra --Werror=all-warnings)
    if(NOT STRATA_WERROR)
      set(_cuda_warn -Xcompiler=-Wall,-Wextra)
    endif()
    add_compile_options("$<$<COMPILE_LANGUAGE:CUDA>:${_cuda_warn}>")
    add_compile_options("$<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-fmacro-prefix-map=${CMAKE_SOURCE_DIR}/=>")
    find_package(NCCL)
    if(NCCL_FOUND)
      set(STRATA_HAVE_NCCL ON)
    endif()
  elseif(STRATA_CUDA STREQUAL "ON")
    message(FATAL_ERROR "STRATA_CUDA=ON but no CUDA compiler (nvcc) was found; "
                        "install the CUDA toolkit or configure with -DSTRATA_CUDA=OFF")
  endif()
endif()
