# Compiler flags shared by every strata target: warnings (as errors), sanitizers, relative __FILE__.
# The library is built for baseline x86-64; SIMD kernels get their ISA flags per source file
# (see kernels/CMakeLists.txt) and are chosen at run time.

set(_strata_warn -Wall -Wextra -Wshadow -Wpedantic -Wno-psabi)
if(STRATA_WERROR)
  list(APPEND _strata_warn -Werror)
endif()
# GCC 12 reports impossible overlaps in std::string's operator+ at -O3 (GCC PR 105651).
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  list(APPEND _strata_warn -Wno-restrict)
endif()
add_compile_options("$<$<COMPILE_LANGUAGE:C,CXX>:${_strata_warn}>" "$<$<COMPILE_LANGUAGE:CXX>:-Wnon-virtual-dtor>")
# Keep __FILE__ (used in error messages) relative to the source tree.
add_compile_options("$<$<COMPILE_LANGUAGE:C,CXX>:-fmacro-prefix-map=${CMAKE_SOURCE_DIR}/=>")

# Fuzzing (clang's libFuzzer): every strata source gets coverage instrumentation; the fuzz
# targets in tests/fuzz link libFuzzer's main.
if(STRATA_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "STRATA_FUZZ needs clang (CC=clang CXX=clang++), not ${CMAKE_CXX_COMPILER_ID}")
  endif()
  add_compile_options("$<$<COMPILE_LANGUAGE:C,CXX>:-fsanitize=fuzzer-no-link>")
endif()

if(STRATA_SANITIZE)
  string(REPLACE " " "" _strata_san "${STRATA_SANITIZE}")
  add_compile_options("$<$<COMPILE_LANGUAGE:C,CXX>:-fsanitize=${_strata_san};-fno-omit-frame-pointer;-fno-sanitize-recover=all>")
  add_link_options("-fsanitize=${_strata_san}")
endif()

# strata_isa_flags(<source> <flags...>): compile one source with extra ISA flags.
function(strata_isa_flags source)
  set_source_files_properties(${source} PROPERTIES COMPILE_OPTIONS "${ARGN}")
endfunction()
