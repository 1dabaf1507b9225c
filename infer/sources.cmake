set(INFER_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/cpu_ops.cpp
  ${CMAKE_CURRENT_LIST_DIR}/generate.cpp
  ${CMAKE_CURRENT_LIST_DIR}/gguf_runner.cpp
  ${CMAKE_CURRENT_LIST_DIR}/quant_kernels.cpp
  ${CMAKE_CURRENT_LIST_DIR}/sampling.cpp
  ${CMAKE_CURRENT_LIST_DIR}/thread_pool.cpp)
# x86-64 only: compiled with -mavx2 -mfma -mf16c and chosen at run time (see CMakeLists.txt).
set(INFER_AVX2_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/quant_kernels_avx2.cpp)
