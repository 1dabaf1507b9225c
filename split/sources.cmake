set(SPLIT_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/allocation_counter.cpp
  ${CMAKE_CURRENT_LIST_DIR}/devices_profile.cpp
  ${CMAKE_CURRENT_LIST_DIR}/layer_profile.cpp
  ${CMAKE_CURRENT_LIST_DIR}/planner.cpp
  ${CMAKE_CURRENT_LIST_DIR}/split_plan.cpp)
