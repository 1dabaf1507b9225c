# core/comm: MPI bootstraps the ranks; c10d (Gloo, or NCCL on CUDA builds) moves the tensors. Only world.cpp
# includes c10d, Gloo and MPI headers, so their include folders and definitions go on that file alone (the
# rest of fedsplit_core and its users compile as before); the libraries are linked through CORE_LIBS.
list(APPEND CORE_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/link_model.cpp
  ${CMAKE_CURRENT_LIST_DIR}/message.cpp
  ${CMAKE_CURRENT_LIST_DIR}/world.cpp)

set(COMM_DEFINITIONS)
set(COMM_INCLUDES)
# ProcessGroupGloo.hpp includes <gloo/...>: Debian ships those in libgloo-dev (and libgloo.so beside
# libtorch's libgloo.so.0); a wheel's LibTorch may carry them under its own include folder.
find_path(GLOO_INCLUDE_DIR gloo/context.h HINTS ${TORCH_INCLUDE_DIRS})
find_library(GLOO_LIBRARY gloo)
if(GLOO_INCLUDE_DIR)
  list(APPEND COMM_DEFINITIONS USE_C10D_GLOO FEDSPLIT_HAVE_GLOO)
  list(APPEND COMM_INCLUDES ${GLOO_INCLUDE_DIR})
  if(GLOO_LIBRARY)
    list(APPEND CORE_LIBS ${GLOO_LIBRARY})
  endif()
else()
  message(WARNING "gloo/context.h not found (install libgloo-dev): multi-rank Worlds will throw CommError")
endif()
# NCCL only with a CUDA LibTorch whose include tree (or the system) has nccl.h.
if(TORCH_CUDA_LIBRARIES)
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${TORCH_INCLUDE_DIRS} ${CUDA_TOOLKIT_ROOT_DIR}/include)
  if(NCCL_INCLUDE_DIR)
    list(APPEND COMM_DEFINITIONS USE_C10D_NCCL FEDSPLIT_HAVE_NCCL)
    list(APPEND COMM_INCLUDES ${NCCL_INCLUDE_DIR})
  endif()
endif()
if(MPI_C_FOUND)
  # The C API only: Open MPI's deprecated C++ bindings warn under -Wextra.
  list(APPEND COMM_DEFINITIONS FEDSPLIT_HAVE_MPI OMPI_SKIP_MPICXX MPICH_SKIP_MPICXX)
  list(APPEND COMM_INCLUDES ${MPI_C_INCLUDE_DIRS})
  list(APPEND CORE_LIBS ${MPI_C_LIBRARIES})
else()
  message(WARNING "MPI not found (install libopenmpi-dev): World::create under mpirun will throw CommError")
endif()
# -I/usr/include would reorder the system headers: leave the compiler's own folders out.
list(REMOVE_ITEM COMM_INCLUDES ${CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES})
set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/world.cpp PROPERTIES
  COMPILE_DEFINITIONS "${COMM_DEFINITIONS}" INCLUDE_DIRECTORIES "${COMM_INCLUDES}")
