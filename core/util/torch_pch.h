// Precompiled header for every fedsplit target: LibTorch's headers cost 15-20 s per file otherwise.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>
