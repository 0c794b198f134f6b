// The contract between the registry (core/backend.cpp) and a backend built as its own shared
// library and opened at run time (native/cuda/ -> libdfl_cuda.so), after ggml's GGML_BACKEND_DL.
//
// The library exports one C function, DFL_BACKEND_FACTORY_SYMBOL, of type dfl_backend_factory.
// The class Backend itself crosses the boundary (the same compiler and standard library build
// both sides), so both must agree on backend.h: DFL_BACKEND_ABI is a hash of backend.h, its kernel
// list backend_kernels.def and shapes.h, computed by CMake for every target, and the factory refuses
// any other value.
#pragma once
#include <string>

#include "core/backend.h"

#ifndef DFL_BACKEND_ABI
#define DFL_BACKEND_ABI "unversioned"
#endif

#define DFL_BACKEND_FACTORY_SYMBOL "dfl_create_backend"
// Optional: the libraries the backend was built against and runs with, asked before the factory
// and answered without a device (for `info`, also where the backend cannot start).
#define DFL_BACKEND_LIBRARIES_SYMBOL "dfl_library_versions"

// Returns a new backend (the caller owns it and deletes it through the virtual destructor), or
// null with *error set to why not, in the driver's or library's own words. Never throws.
extern "C" {
typedef dfl::Backend* (*dfl_backend_factory)(const char* abi, std::string* error);
// Sets *text to one line naming the versions; false when they cannot work together (the factory
// then refuses, with that line as its error). Never throws.
typedef bool (*dfl_backend_libraries)(std::string* text);
}
