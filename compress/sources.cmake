set(COMPRESS_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/gguf.cpp
  ${CMAKE_CURRENT_LIST_DIR}/gguf_quant.cpp
  ${CMAKE_CURRENT_LIST_DIR}/gguf_tensor.cpp)
