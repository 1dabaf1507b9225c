list(APPEND CORE_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/client_data.cpp
  ${CMAKE_CURRENT_LIST_DIR}/corpus.cpp
  ${CMAKE_CURRENT_LIST_DIR}/named_corpora.cpp
  ${CMAKE_CURRENT_LIST_DIR}/npm_package.cpp
  ${CMAKE_CURRENT_LIST_DIR}/partition.cpp
  ${CMAKE_CURRENT_LIST_DIR}/shards.cpp
  ${CMAKE_CURRENT_LIST_DIR}/dataset.cpp
  ${CMAKE_CURRENT_LIST_DIR}/prepare.cpp)
