set(LAUNCH_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/main.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cmd_run.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cmd_data.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cmd_tokenizer.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cmd_model.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cmd_peft.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cmd_report.cpp)
