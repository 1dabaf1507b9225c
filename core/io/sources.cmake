list(APPEND CORE_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/hdf5.cpp
  ${CMAKE_CURRENT_LIST_DIR}/safetensors.cpp
  ${CMAKE_CURRENT_LIST_DIR}/hf_weights.cpp)
