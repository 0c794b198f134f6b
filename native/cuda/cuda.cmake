# The CUDA backend, libdfl_cuda.so (included by the top-level CMakeLists.txt).
# Built when DFL_CUDA is ON (the default) and nvcc, cuDNN 9 and cuBLAS 13 are all found; otherwise
# this prints why not, and the addon is built for the CPU alone: an install never fails for CUDA.
#
# Where the libraries are looked for, in order:
#   1. CUDNN_ROOT / CUBLAS_ROOT (CMake variables, or environment variables of the same names);
#   2. the pip wheels (pip install nvidia-cudnn-cu13 nvidia-cublas): <site-packages>/nvidia/cudnn
#      and <site-packages>/nvidia/cu13 (cuBLAS 13; older wheels: nvidia/cublas), where site-packages
#      is asked of $DFL_PYTHON, then python3;
#   3. the system (the CUDA toolkit's folders, /usr, /usr/local).
# The wheels ship versioned sonames only, so the library links -l:libcudnn.so.9 -l:libcublas.so.13,
# with an RPATH to the folders they were found in. CUDA's runtime is linked statically; libcuda
# (the driver) is never linked: the runtime opens it at run time.
# DFL_CUDA_WERROR=ON (or the environment variable) turns every warning into an error (CI);
# DFL_CUDA_ARCHITECTURES (default "80-real;90": sm_80, sm_90 and compute_90 PTX) picks the targets.
option(DFL_CUDA "Build the CUDA backend (libdfl_cuda.so) when nvcc, cuDNN 9 and cuBLAS 13 are found" ON)
option(DFL_CUDA_WERROR "Treat warnings in the CUDA backend as errors" $ENV{DFL_CUDA_WERROR})
option(DFL_CUDA_REQUIRED "Fail the configuration when the CUDA backend cannot be built" OFF)
# sm_80 (A100) and sm_90 (H100/H200) machine code, plus compute_90 PTX that newer GPUs compile.
set(DFL_CUDA_ARCHITECTURES "80-real;90" CACHE STRING "CUDA architectures of libdfl_cuda.so")

set(DFL_CUDA_BUILT OFF)
set(DFL_CUDA_WHY_NOT "")

# Folders to search for a library: the explicit root, the wheels' folders, the system.
function(dfl_cuda_candidates root_var wheel_subdirs out)
  set(dirs "")
  foreach(root "${${root_var}}" "$ENV{${root_var}}")
    if(root)
      list(APPEND dirs "${root}")
    endif()
  endforeach()
  foreach(py "$ENV{DFL_PYTHON}" "${DFL_PYTHON}" python3)
    if(NOT py)
      continue()
    endif()
    execute_process(COMMAND "${py}" -c "import site,sys; print(';'.join(site.getsitepackages() + [site.getusersitepackages()] + sys.path))"
                    OUTPUT_VARIABLE sites OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
    if(rc EQUAL 0)
      foreach(site ${sites})
        foreach(sub ${wheel_subdirs})
          if(EXISTS "${site}/nvidia/${sub}")
            list(APPEND dirs "${site}/nvidia/${sub}")
          endif()
        endforeach()
      endforeach()
    endif()
  endforeach()
  list(APPEND dirs ${CUDAToolkit_LIBRARY_ROOT} /usr/local/cuda /usr /usr/local)
  list(REMOVE_DUPLICATES dirs)
  set(${out} "${dirs}" PARENT_SCOPE)
endfunction()

# Finds header + versioned library under the candidates; sets <prefix>_INCLUDE, <prefix>_LIBDIR.
# A successful search is remembered in the cache, so a later re-configure (which may run without
# the environment of the first) keeps what was found while it still exists.
function(dfl_cuda_find prefix header soname root_var wheel_subdirs)
  if(${prefix}_FOUND_LIBDIR AND EXISTS "${${prefix}_FOUND_LIBDIR}/${soname}" AND NOT "$ENV{${root_var}}" AND NOT ${root_var})
    set(${prefix}_INCLUDE "${${prefix}_FOUND_INCLUDE}" PARENT_SCOPE)
    set(${prefix}_LIBDIR "${${prefix}_FOUND_LIBDIR}" PARENT_SCOPE)
    return()
  endif()
  dfl_cuda_candidates(${root_var} "${wheel_subdirs}" dirs)
  foreach(d ${dirs})
    foreach(inc include include/x86_64-linux-gnu)
      foreach(lib lib lib64 lib/x86_64-linux-gnu targets/x86_64-linux/lib)
        if(EXISTS "${d}/${inc}/${header}" AND EXISTS "${d}/${lib}/${soname}")
          set(${prefix}_INCLUDE "${d}/${inc}" PARENT_SCOPE)
          set(${prefix}_LIBDIR "${d}/${lib}" PARENT_SCOPE)
          set(${prefix}_FOUND_INCLUDE "${d}/${inc}" CACHE INTERNAL "")
          set(${prefix}_FOUND_LIBDIR "${d}/${lib}" CACHE INTERNAL "")
          return()
        endif()
      endforeach()
    endforeach()
  endforeach()
  string(REPLACE ";" ", " searched "${dirs}")
  set(${prefix}_MISSING "${soname} with ${header} not found (searched ${searched}; set ${root_var} or pip install the wheel)" PARENT_SCOPE)
endfunction()

if(NOT DFL_CUDA)
  set(DFL_CUDA_WHY_NOT "DFL_CUDA=OFF")
elseif(NOT CMAKE_SYSTEM_NAME STREQUAL "Linux")
  set(DFL_CUDA_WHY_NOT "the CUDA backend is built on Linux only")
else()
  include(CheckLanguage)
  check_language(CUDA)
  if(NOT CMAKE_CUDA_COMPILER)
    set(DFL_CUDA_WHY_NOT "nvcc was not found (install the CUDA toolkit or put nvcc on the PATH)")
  else()
    enable_language(CUDA)
    find_package(CUDAToolkit QUIET)
    dfl_cuda_find(DFL_CUDNN cudnn.h libcudnn.so.9 CUDNN_ROOT "cudnn")
    dfl_cuda_find(DFL_CUBLAS cublas_v2.h libcublas.so.13 CUBLAS_ROOT "cu13;cublas")
    if(DFL_CUDNN_MISSING)
      set(DFL_CUDA_WHY_NOT "cuDNN 9: ${DFL_CUDNN_MISSING}")
    elseif(DFL_CUBLAS_MISSING)
      set(DFL_CUDA_WHY_NOT "cuBLAS 13: ${DFL_CUBLAS_MISSING}")
    else()
      set(DFL_CUDA_BUILT ON)
    endif()
  endif()
endif()

if(DFL_CUDA_BUILT)
  message(STATUS "dfl-native: building the CUDA backend (cuDNN ${DFL_CUDNN_LIBDIR}, cuBLAS ${DFL_CUBLAS_LIBDIR})")
  dfl_sources_from_json(cuda DFL_CUDA_SOURCES)
  add_library(dfl_cuda SHARED ${DFL_CUDA_SOURCES})
  set_target_properties(dfl_cuda PROPERTIES CUDA_ARCHITECTURES "${DFL_CUDA_ARCHITECTURES}")
  set_target_properties(dfl_cuda PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON CUDA_RUNTIME_LIBRARY Static
                        CXX_VISIBILITY_PRESET hidden CUDA_VISIBILITY_PRESET hidden
                        BUILD_RPATH "${DFL_CUDNN_LIBDIR};${DFL_CUBLAS_LIBDIR}"
                        INSTALL_RPATH "${DFL_CUDNN_LIBDIR};${DFL_CUBLAS_LIBDIR}")
  target_include_directories(dfl_cuda PRIVATE "${CMAKE_CURRENT_SOURCE_DIR}/native" "${DFL_CUDNN_INCLUDE}"
                             "${DFL_CUBLAS_INCLUDE}")
  target_compile_definitions(dfl_cuda PRIVATE DFL_BACKEND_ABI="${DFL_BACKEND_ABI}")
  target_compile_options(dfl_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra,-Wno-unused-parameter>
                         $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr>)
  # The kernels' arithmetic is the host's (docs/native.md, "Numerics"): no contraction of a product
  # and a sum into one fused multiply-add (nvcc's default; an explicit fmaf() stays fused), IEEE
  # division and square root, denormals kept. Then a body gives the bits it gives on the host, where
  # the CPU tests check it. cuDNN and cuBLAS are not affected.
  target_compile_options(dfl_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-fmad=false -ftz=false -prec-div=true -prec-sqrt=true>)
  if(DFL_CUDA_WERROR)
    target_compile_options(dfl_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings -Xcompiler=-Werror>)
  endif()
  # By versioned soname (the wheels ship no unversioned link names); no libcuda.
  target_link_options(dfl_cuda PRIVATE "-L${DFL_CUDNN_LIBDIR}" "-L${DFL_CUBLAS_LIBDIR}" -Wl,--no-undefined)
  target_link_libraries(dfl_cuda PRIVATE -l:libcudnn.so.9 -l:libcublas.so.13 -l:libcublasLt.so.13 dl pthread rt)
  # On the registry's file alone, so switching CUDA on or off recompiles one file of the core.
  set_source_files_properties("${CMAKE_CURRENT_SOURCE_DIR}/native/core/backend.cpp"
                              PROPERTIES COMPILE_DEFINITIONS DFL_CUDA_COMPILED)
elseif(DFL_CUDA_REQUIRED)
  message(FATAL_ERROR "dfl-native: the CUDA backend was required (DFL_CUDA_REQUIRED) but: ${DFL_CUDA_WHY_NOT}")
else()
  message(STATUS "dfl-native: CUDA backend not built: ${DFL_CUDA_WHY_NOT}")
endif()
# Why not, for `info` (a generated header: the text holds characters a command line would mangle).
string(REPLACE "\\" "/" dfl_why "${DFL_CUDA_WHY_NOT}")
string(REPLACE "\"" "'" dfl_why "${dfl_why}")
file(CONFIGURE OUTPUT "${CMAKE_CURRENT_BINARY_DIR}/generated/dfl_cuda_status.h"
     CONTENT "#define DFL_CUDA_NOT_BUILT_REASON \"${dfl_why}\"\n")
target_include_directories(dfl_core PRIVATE "${CMAKE_CURRENT_BINARY_DIR}/generated")
target_compile_definitions(dfl_core PRIVATE DFL_HAVE_CUDA_STATUS_H)
