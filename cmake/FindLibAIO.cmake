# FindLibAIO: libaio (Debian libaio-dev) ships no CMake config.
# Defines LibAIO_FOUND and the target strata::aio.
find_path(LibAIO_INCLUDE_DIR libaio.h)
find_library(LibAIO_LIBRARY aio)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(LibAIO REQUIRED_VARS LibAIO_LIBRARY LibAIO_INCLUDE_DIR)
if(LibAIO_FOUND AND NOT TARGET strata::aio)
  add_library(strata::aio UNKNOWN IMPORTED)
  set_target_properties(strata::aio PROPERTIES IMPORTED_LOCATION "${LibAIO_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${LibAIO_INCLUDE_DIR}")
endif()
mark_as_advanced(LibAIO_INCLUDE_DIR LibAIO_LIBRARY)
